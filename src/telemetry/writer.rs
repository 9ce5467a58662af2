//! The log writer: each thread appends its lines to a buffer of its own, and one
//! background thread (`log-writer`) takes the buffers over and writes them to the sink
//! (stderr), many lines per system call.
//!
//! - A thread gets its buffer the first time it writes a line. Writing a line locks that
//!   buffer's mutex (which only the writer thread ever contends for, for as long as it
//!   takes to swap two `Vec`s), copies the line in and unlocks: no allocation, no channel,
//!   no system call, no wake-up. The buffer's capacity is reserved when it is made (twice
//!   [`Options::wake_bytes`]), so it does not grow while the sink keeps up.
//! - The writer thread swaps every non-empty buffer with an empty one of its own (the two
//!   `Vec`s of a buffer take turns, so nothing is freed and allocated again) and writes all
//!   of them with one vectored write (`writev(2)`), then flushes the sink. It does so when
//!   a buffer passes [`Options::wake_bytes`] (the line that crosses it unparks the writer,
//!   once per swap), and otherwise every [`Options::interval`] (10 ms) while lines arrive:
//!   a line written while the gateway is idle reaches the sink within that interval plus
//!   the time of the write. When a round finds nothing to write, the writer parks without
//!   a timeout and the next line (the first since) unparks it.
//! - A thread never waits on the sink: the writer holds no buffer's lock while it writes.
//!   When the sink stalls (stderr not read, a file on a hung disk) the buffers fill up to
//!   [`Options::max_bytes`] each, and lines that do not fit are dropped and counted
//!   ([`LogWriter::dropped`]); once the sink takes lines again, the writer logs one
//!   warning with how many were dropped since its last.
//! - Lines of one thread reach the sink in the order they were written; lines of different
//!   threads are ordered by batch, and within a batch by thread.
//! - Dropping the [`LogWriterGuard`] writes out every line written before it, flushes the
//!   sink and ends the thread. It waits for as long as the write makes progress and gives
//!   up after [`SHUTDOWN_STALL`] without any (a stalled sink). Lines written after the
//!   writer has ended go to the sink directly, from the thread that writes them.
//!
//! A line is what one `write` call hands over (tracing-subscriber's fmt layer writes each
//! event with one `write_all`, which is one call here): it is kept or dropped whole.

use std::cell::RefCell;
use std::io::{self, IoSlice, Write};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock, PoisonError};
use std::thread::{self, Thread};
use std::time::Duration;

use tracing_subscriber::fmt::MakeWriter;

/// How long the guard's drop waits on a write that makes no progress.
pub const SHUTDOWN_STALL: Duration = Duration::from_secs(1);

/// Sizes and timing of a [`LogWriter`].
#[derive(Debug, Clone, Copy)]
pub struct Options {
    /// The longest a line waits in its buffer before the writer takes it (10 ms).
    pub interval: Duration,
    /// A buffer holding this much wakes the writer at once (64 KiB).
    pub wake_bytes: usize,
    /// The most a thread's buffer holds; lines that do not fit are dropped (4 MiB: some
    /// 16,000 access lines, 140 ms of a worker's at 113,000 requests per second).
    pub max_bytes: usize,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            interval: Duration::from_millis(10),
            wake_bytes: 64 * 1024,
            max_bytes: 4 * 1024 * 1024,
        }
    }
}

/// Appends lines to the calling thread's buffer; the [`MakeWriter`] the subscriber writes
/// lines to.
#[derive(Clone)]
pub struct LogWriter {
    shared: Arc<Shared>,
}

/// Ends the writer thread when dropped, after writing out every line written before.
#[must_use = "dropping the guard ends the log writer"]
pub struct LogWriterGuard {
    shared: Arc<Shared>,
    thread: Option<thread::JoinHandle<()>>,
}

struct Shared {
    /// Tells this writer's buffers apart from other writers' in a thread's list.
    id: u64,
    options: Options,
    /// Buffers made since the writer thread last looked; it moves them to its own list.
    new_buffers: Mutex<Vec<Arc<Buffer>>>,
    /// Lines written on a thread whose thread-locals are already gone (or from inside the
    /// writer, should the sink log).
    orphans: Arc<Buffer>,
    /// Set while the writer thread parks without a timeout.
    idle: AtomicBool,
    /// Set by the guard: the writer writes out what is left and ends.
    closed: AtomicBool,
    /// Set by the writer thread, holding the sink, before its last round: a line that
    /// finds it set is written to the sink directly.
    draining: AtomicBool,
    dropped: AtomicU64,
    /// Bytes written to the sink (the guard's measure of progress).
    written: AtomicU64,
    writer: OnceLock<Thread>,
    sink: Mutex<Box<dyn Write + Send>>,
    /// Whether the writer thread has ended; the guard waits on it.
    done: Mutex<bool>,
    ended: Condvar,
}

/// A thread's buffer.
struct Buffer {
    lines: Mutex<Lines>,
}

struct Lines {
    bytes: Vec<u8>,
    /// Whether this buffer unparked the writer since the writer last took it.
    woke: bool,
    /// Whether its thread has ended (the writer forgets it once it is empty).
    ended: bool,
}

/// A thread's hold on its buffer: marks it ended when the thread ends.
struct Held(u64, Arc<Buffer>);

impl Drop for Held {
    fn drop(&mut self) {
        lock(&self.1.lines).ended = true;
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Whatever panicked while holding one of these locks left whole lines behind.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Buffer {
    fn new(capacity: usize) -> Arc<Self> {
        Arc::new(Buffer {
            lines: Mutex::new(Lines {
                bytes: Vec::with_capacity(capacity),
                woke: false,
                ended: false,
            }),
        })
    }
}

thread_local! {
    /// The calling thread's buffer for each writer it has written to (normally one).
    static BUFFERS: RefCell<Vec<Held>> = const { RefCell::new(Vec::new()) };
}

impl LogWriter {
    /// Starts the writer thread writing to `sink`.
    pub fn spawn(
        sink: impl Write + Send + 'static,
        options: Options,
    ) -> io::Result<(LogWriter, LogWriterGuard)> {
        static NEXT_ID: AtomicU64 = AtomicU64::new(0);
        let shared = Arc::new(Shared {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            options,
            new_buffers: Mutex::new(Vec::new()),
            orphans: Buffer::new(0),
            idle: AtomicBool::new(false),
            closed: AtomicBool::new(false),
            draining: AtomicBool::new(false),
            dropped: AtomicU64::new(0),
            written: AtomicU64::new(0),
            writer: OnceLock::new(),
            sink: Mutex::new(Box::new(sink)),
            done: Mutex::new(false),
            ended: Condvar::new(),
        });
        let thread = {
            let shared = shared.clone();
            thread::Builder::new()
                .name("log-writer".into())
                .spawn(move || run(&shared))?
        };
        let _ = shared.writer.set(thread.thread().clone());
        let writer = LogWriter {
            shared: shared.clone(),
        };
        let guard = LogWriterGuard {
            shared,
            thread: Some(thread),
        };
        Ok((writer, guard))
    }

    /// Lines dropped so far because their thread's buffer was full.
    pub fn dropped(&self) -> u64 {
        self.shared.dropped.load(Ordering::Relaxed)
    }

    fn append(&self, line: &[u8]) {
        let shared = &*self.shared;
        let appended = BUFFERS.try_with(|list| {
            let Ok(mut list) = list.try_borrow_mut() else {
                return false;
            };
            if let Some(Held(_, buffer)) = list.iter().find(|h| h.0 == shared.id) {
                shared.append_to(buffer, line);
                return true;
            }
            // Buffers of writers that have ended are no use any more.
            list.retain(|h| Arc::strong_count(&h.1) > 1);
            let buffer = Buffer::new(2 * shared.options.wake_bytes);
            lock(&shared.new_buffers).push(buffer.clone());
            shared.append_to(&buffer, line);
            list.push(Held(shared.id, buffer));
            true
        });
        if appended != Ok(true) {
            shared.append_to(&shared.orphans, line);
        }
    }
}

impl Shared {
    fn append_to(&self, buffer: &Buffer, line: &[u8]) {
        let mut lines = lock(&buffer.lines);
        // The writer sets `draining` before it takes the buffers for the last time: a line
        // that does not see it set here is taken then.
        if self.draining.load(Ordering::Acquire) {
            drop(lines);
            let mut sink = lock(&self.sink);
            let _ = sink.write_all(line);
            let _ = sink.flush();
            return;
        }
        if lines.bytes.len() + line.len() > self.options.max_bytes {
            drop(lines);
            self.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let was_empty = lines.bytes.is_empty();
        lines.bytes.extend_from_slice(line);
        let wake = !lines.woke && lines.bytes.len() >= self.options.wake_bytes;
        lines.woke |= wake;
        drop(lines);
        // The writer sets `idle` before it looks at every buffer one last time (taking
        // each lock): a line it missed came into an empty buffer after that, and sees it.
        if wake || (was_empty && self.idle.swap(false, Ordering::AcqRel)) {
            if let Some(writer) = self.writer.get() {
                writer.unpark();
            }
        }
    }
}

impl<'a> MakeWriter<'a> for LogWriter {
    type Writer = &'a LogWriter;

    fn make_writer(&'a self) -> Self::Writer {
        self
    }
}

impl Write for &LogWriter {
    fn write(&mut self, line: &[u8]) -> io::Result<usize> {
        self.append(line);
        Ok(line.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Every buffer the writer thread knows, each with the writer's half: the `Vec` it swaps
/// in, then writes out.
type Taken = Vec<(Arc<Buffer>, Vec<u8>)>;

/// The writer thread.
fn run(shared: &Shared) {
    let mut taken: Taken = vec![(shared.orphans.clone(), Vec::new())];
    let mut reported = 0;
    while !shared.closed.load(Ordering::Acquire) {
        let wrote = take(shared, &mut taken);
        if wrote {
            write_out(shared, &mut taken, &mut **lock(&shared.sink));
        }
        let dropped = shared.dropped.load(Ordering::Relaxed);
        if dropped != reported {
            tracing::warn!(
                dropped = dropped - reported,
                "log lines dropped: the log sink did not keep up"
            );
            reported = dropped;
        }
        if wrote {
            thread::park_timeout(shared.options.interval);
            continue;
        }
        // A whole interval without lines: park until one comes.
        shared.idle.store(true, Ordering::SeqCst);
        let pending = !lock(&shared.new_buffers).is_empty()
            || taken.iter().any(|(b, _)| !lock(&b.lines).bytes.is_empty());
        if !pending && !shared.closed.load(Ordering::Acquire) {
            thread::park();
        }
        shared.idle.store(false, Ordering::SeqCst);
        if !pending && !shared.closed.load(Ordering::Acquire) {
            // Lines that come in now wait out the interval, to be written together.
            thread::park_timeout(shared.options.interval);
        }
    }
    {
        let mut sink = lock(&shared.sink);
        shared.draining.store(true, Ordering::Release);
        if take(shared, &mut taken) {
            write_out(shared, &mut taken, &mut **sink);
        }
    }
    *lock(&shared.done) = true;
    shared.ended.notify_all();
}

/// Swaps every non-empty buffer with the writer's half; whether any was.
fn take(shared: &Shared, taken: &mut Taken) -> bool {
    for buffer in lock(&shared.new_buffers).drain(..) {
        let capacity = lock(&buffer.lines).bytes.capacity();
        taken.push((buffer, Vec::with_capacity(capacity)));
    }
    let mut any = false;
    taken.retain_mut(|(buffer, mine)| {
        let mut lines = lock(&buffer.lines);
        if !lines.bytes.is_empty() {
            std::mem::swap(&mut lines.bytes, mine);
            lines.woke = false;
            any = true;
        }
        // An ended thread's buffer goes once its last lines are out.
        !(lines.ended && lines.bytes.is_empty() && mine.is_empty())
    });
    any
}

/// Writes the taken lines with one vectored write (more only when the sink takes part of
/// it), then empties the writer's halves.
fn write_out(shared: &Shared, taken: &mut Taken, sink: &mut dyn Write) {
    let mut slices: Vec<IoSlice<'_>> = taken
        .iter()
        .filter(|(_, mine)| !mine.is_empty())
        .map(|(_, mine)| IoSlice::new(mine))
        .collect();
    // A sink that fails loses this batch; the next one is tried again.
    let _ = write_all_vectored(sink, &mut slices, &shared.written);
    let _ = sink.flush();
    drop(slices);
    for (_, mine) in taken.iter_mut() {
        mine.clear();
    }
}

fn write_all_vectored(
    sink: &mut dyn Write,
    mut slices: &mut [IoSlice<'_>],
    written: &AtomicU64,
) -> io::Result<()> {
    while !slices.is_empty() {
        match sink.write_vectored(slices) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => {
                written.fetch_add(n as u64, Ordering::Relaxed);
                IoSlice::advance_slices(&mut slices, n);
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

impl LogWriterGuard {
    /// Lines dropped so far because their thread's buffer was full.
    pub fn dropped(&self) -> u64 {
        self.shared.dropped.load(Ordering::Relaxed)
    }
}

impl Drop for LogWriterGuard {
    fn drop(&mut self) {
        let shared = &*self.shared;
        shared.closed.store(true, Ordering::Release);
        if let Some(writer) = shared.writer.get() {
            writer.unpark();
        }
        let mut done = lock(&shared.done);
        let mut seen = shared.written.load(Ordering::Relaxed);
        while !*done {
            let (next, wait) = shared
                .ended
                .wait_timeout(done, SHUTDOWN_STALL)
                .unwrap_or_else(PoisonError::into_inner);
            done = next;
            let now = shared.written.load(Ordering::Relaxed);
            if wait.timed_out() && now == seen && !*done {
                // The sink is stalled: leave the thread to it.
                return;
            }
            seen = now;
        }
        drop(done);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::mpsc;
    use std::time::Instant;

    use super::*;

    /// A sink the tests read back; `gate` held makes it stall.
    #[derive(Clone, Default)]
    struct Sink {
        bytes: Arc<Mutex<Vec<u8>>>,
        gate: Arc<Mutex<()>>,
    }

    impl Write for Sink {
        fn write(&mut self, b: &[u8]) -> io::Result<usize> {
            let _gate = lock(&self.gate);
            lock(&self.bytes).extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    impl Sink {
        fn text(&self) -> String {
            String::from_utf8(lock(&self.bytes).clone()).unwrap()
        }
    }

    fn write_line(w: &LogWriter, line: &str) {
        let mut w = w;
        w.write_all(line.as_bytes()).unwrap();
    }

    #[test]
    fn the_guard_writes_out_every_line_in_order_per_thread() {
        let sink = Sink::default();
        let (writer, guard) = LogWriter::spawn(sink.clone(), Options::default()).unwrap();
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let writer = writer.clone();
                thread::spawn(move || {
                    for i in 0..5000 {
                        write_line(&writer, &format!("{t} {i}\n"));
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        write_line(&writer, "last\n");
        drop(guard);
        let text = sink.text();
        let mut next = [0; 4];
        for line in text.lines().filter(|l| *l != "last") {
            let (t, i) = line.split_once(' ').unwrap();
            let t: usize = t.parse().unwrap();
            assert_eq!(i.parse::<usize>().unwrap(), next[t], "{line}");
            next[t] += 1;
        }
        assert_eq!(next, [5000; 4]);
        assert!(text.ends_with("last\n"));
        assert_eq!(writer.dropped(), 0);
        // Once the writer has ended, lines go to the sink directly.
        write_line(&writer, "after\n");
        assert!(sink.text().ends_with("last\nafter\n"));
    }

    #[test]
    fn an_idle_writer_writes_a_line_without_further_lines() {
        let sink = Sink::default();
        let options = Options {
            interval: Duration::from_millis(5),
            ..Options::default()
        };
        let (writer, _guard) = LogWriter::spawn(sink.clone(), options).unwrap();
        for round in 0..3 {
            let line = format!("line {round}\n");
            write_line(&writer, &line);
            let started = Instant::now();
            while !sink.text().ends_with(&line) {
                assert!(started.elapsed() < Duration::from_secs(10), "{round}");
                thread::sleep(Duration::from_millis(1));
            }
            // Long enough for the writer to go idle.
            thread::sleep(Duration::from_millis(30));
        }
    }

    #[test]
    fn a_stalled_sink_drops_lines_instead_of_blocking() {
        let sink = Sink::default();
        let options = Options {
            interval: Duration::from_millis(1),
            wake_bytes: 64,
            max_bytes: 1024,
        };
        let (writer, guard) = LogWriter::spawn(sink.clone(), options).unwrap();
        let stall = lock(&sink.gate);
        // The writer takes this line and then waits on the sink, with at most two
        // buffers' worth taken in: most of what follows cannot fit.
        write_line(&writer, "first\n");
        let (tx, rx) = mpsc::channel();
        let w = writer.clone();
        thread::spawn(move || {
            for i in 0..1000 {
                write_line(&w, &format!("line {i:04}\n"));
            }
            tx.send(()).unwrap();
        });
        // The writing thread finishes while the sink is stalled.
        rx.recv_timeout(Duration::from_secs(30)).unwrap();
        assert!(writer.dropped() > 0);
        drop(stall);
        drop(guard);
        let text = sink.text();
        let kept = text.lines().filter(|l| l.starts_with("line ")).count() as u64;
        assert_eq!(kept + writer.dropped(), 1000, "{text}");
        assert!(text.starts_with("first\n"));
    }
}
