//! The connection: every accepted TCP connection is a [`Stream`], which answers the requests
//! the HTTP layer refuses before they exist with problem+json, and is bounded against
//! clients that read their response too slowly (or not at all).
//!
//! **Refusals of the HTTP layer.** actix-http's HTTP/1 dispatcher answers a request head it
//! cannot read, before any service or layer runs: a broken request line or header field
//! (`400`), more than 96 header fields or a head over 128 KiB (`431`), a head that does not
//! arrive within `server.client_request_timeout_ms` (`408`). It writes these as a bare head
//! (`content-length: 0`, then `date`) as the last thing on the connection, and offers no
//! hook. [`Stream`] recognises exactly those heads at the end of what the dispatcher writes
//! (a check of the last bytes of each write) and sends in their place the same status as a
//! problem+json answer (`malformed_request`, `head_too_large`, `head_timeout`) with a new
//! request id, which a `warn` line logs. Every other byte passes through unchanged.
//!
//! **Clients that do not take their response.**
//! actix-web bounds the time to send a request head (`server.client_request_timeout_ms`),
//! but not the time a response takes to leave: a client that stops reading keeps its
//! connection, and the worker's buffers, for as long as it likes. So every accepted
//! connection keeps a second handle to its socket and one watchdog task ([`remember`]),
//! and [`layer`] tells the connection when each response starts. If the connection has not
//! moved on to another request (or gone) within `server.client_response_timeout_ms` of a
//! response's start, the watchdog shuts the socket down and resets it (what the client has
//! not taken, in the kernel's buffers too, is discarded), which ends the connection. A
//! response that left in time leaves the watchdog nothing to do: the connection has been
//! closed by then (keep-alive ends idle connections sooner) or carries the next request.
//!
//! A response costs the layer a clock read and two cell writes; the watchdog sleeps until
//! the deadline of the response being sent and ends when its connection does.

use std::cell::Cell;
use std::io;
use std::net::Shutdown;
use std::pin::Pin;
use std::rc::{Rc, Weak};
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use actix_web::body::MessageBody;
use actix_web::dev::{Extensions, ServiceRequest, ServiceResponse};
use actix_web::middleware::Next;
use actix_web::rt::net::TcpStream;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::error::ApiError;

/// An accepted connection, as the HTTP layer reads and writes it.
pub struct Stream {
    io: TcpStream,
    head_timeout: Duration,
    /// A refusal being written in place of the HTTP layer's bare one.
    replacing: Option<Replacement>,
}

impl Stream {
    /// `io` as the HTTP layer's connection; `head_timeout` is
    /// `server.client_request_timeout_ms`, named in a `head_timeout` answer.
    pub fn new(io: TcpStream, head_timeout: Duration) -> Self {
        Self {
            io,
            head_timeout,
            replacing: None,
        }
    }

    /// The peer's address.
    pub fn peer_addr(&self) -> Option<std::net::SocketAddr> {
        self.io.peer_addr().ok()
    }
}

/// The problem+json answer sent instead of a bare refusal, and how much of it is out.
struct Replacement {
    bytes: Vec<u8>,
    written: usize,
    /// The length of the bare head it stands for.
    replaces: usize,
}

/// The error a bare refusal stands for, given `server.client_request_timeout_ms`.
type Refusal = fn(Duration) -> ApiError;

/// The status lines of actix-http's bare refusals (its encoder writes them with these
/// reason phrases).
const REFUSALS: [(&[u8], Refusal); 3] = [
    (b"HTTP/1.1 400 Bad Request\r\n", |_| {
        ApiError::MalformedRequest
    }),
    (b"HTTP/1.1 431 Request Header Fields Too Large\r\n", |_| {
        ApiError::HeadTooLarge
    }),
    (b"HTTP/1.1 408 Request Timeout\r\n", |limit| {
        ApiError::HeadTimeout { limit }
    }),
];

/// `date: Sun, 06 Dec 2026 22:31:14 GMT\r\n`: the fixed-length last header actix writes.
const DATE_LINE: usize = 37;

/// Where a bare refusal head starts in `buf`, which it ends, with its error and its date
/// line (with the line's CRLF).
fn bare_refusal(buf: &[u8], head_timeout: Duration) -> Option<(usize, ApiError, &[u8])> {
    // The common case, any answer with a body: one comparison.
    let before_end = buf.len().checked_sub(2)?;
    if !buf.ends_with(b"\r\n\r\n") {
        return None;
    }
    let date_start = before_end.checked_sub(DATE_LINE)?;
    let date = &buf[date_start..before_end];
    if !date.starts_with(b"date: ") {
        return None;
    }
    let mut head = &buf[..date_start];
    if let Some(rest) = head.strip_suffix(b"connection: close\r\n".as_slice()) {
        head = rest;
    }
    let head = head.strip_suffix(b"content-length: 0\r\n".as_slice())?;
    REFUSALS.iter().find_map(|(line, error)| {
        head.ends_with(line)
            .then(|| (head.len() - line.len(), error(head_timeout), date))
    })
}

/// The problem+json answer to `error`, with a new request id, closing the connection.
fn problem_answer(error: &ApiError, date: &[u8]) -> Vec<u8> {
    let (status, code, _) = error.table();
    let mut buf = uuid::Uuid::encode_buffer();
    let id = uuid::Builder::from_random_bytes(rand::random())
        .into_uuid()
        .hyphenated()
        .encode_lower(&mut buf)
        .to_string();
    tracing::warn!(
        request_id = id.as_str(),
        status = status.as_u16(),
        code,
        "request refused by the HTTP layer"
    );
    let mut problem = error.problem();
    problem.request_id = Some(id.clone());
    let body = problem.to_bytes();
    let mut out = Vec::with_capacity(body.len() + 256);
    out.extend_from_slice(
        format!(
            "HTTP/1.1 {} {}\r\ncontent-type: {}\r\ncontent-length: {}\r\n\
             cache-control: no-store\r\nx-request-id: {id}\r\nconnection: close\r\n",
            status.as_u16(),
            status.canonical_reason().unwrap_or(""),
            crate::error::PROBLEM_JSON,
            body.len(),
        )
        .as_bytes(),
    );
    out.extend_from_slice(date);
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(&body);
    out
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_read(cx, buf)
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.replacing.is_none() {
            match bare_refusal(buf, this.head_timeout) {
                None => return Pin::new(&mut this.io).poll_write(cx, buf),
                // What comes before it (an earlier answer) goes out first, as it is.
                Some((start, _, _)) if start > 0 => {
                    return Pin::new(&mut this.io).poll_write(cx, &buf[..start])
                }
                Some((_, error, date)) => {
                    this.replacing = Some(Replacement {
                        bytes: problem_answer(&error, date),
                        written: 0,
                        replaces: buf.len(),
                    })
                }
            }
        }
        let Some(r) = this.replacing.as_mut() else {
            return Poll::Ready(Ok(0));
        };
        while r.written < r.bytes.len() {
            let n = ready!(Pin::new(&mut this.io).poll_write(cx, &r.bytes[r.written..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            r.written += n;
        }
        let replaced = r.replaces.min(buf.len());
        this.replacing = None;
        Poll::Ready(Ok(replaced))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

/// A connection's second handle to its socket, and the start of the response it is
/// sending (with how many it has started).
struct Connection {
    socket: socket2::Socket,
    response: Cell<(u64, Option<Instant>)>,
    closed: Arc<Notify>,
}

impl Drop for Connection {
    fn drop(&mut self) {
        self.closed.notify_one();
    }
}

/// Keeps a second handle to the socket of a newly accepted connection and starts its
/// watchdog (`on_connect`), which cuts a response not taken `within` its start.
pub fn remember(conn: &Stream, ext: &mut Extensions, within: Duration) {
    match socket2::SockRef::from(&conn.io).try_clone() {
        Ok(socket) => {
            let closed = Arc::new(Notify::new());
            let conn = Rc::new(Connection {
                socket,
                response: Cell::new((0, None)),
                closed: closed.clone(),
            });
            actix_rt::spawn(watch(Rc::downgrade(&conn), closed, within));
            ext.insert(conn);
        }
        Err(e) => tracing::warn!(error = %e, "no response bound for a connection"),
    }
}

/// The watchdog of one connection.
async fn watch(conn: Weak<Connection>, closed: Arc<Notify>, within: Duration) {
    loop {
        let Some(c) = conn.upgrade() else { return };
        let (started, at) = c.response.get();
        drop(c);
        let deadline = at.map_or_else(|| Instant::now() + within, |at| at + within);
        tokio::select! {
            _ = tokio::time::sleep_until(deadline) => {}
            _ = closed.notified() => return,
        }
        let Some(c) = conn.upgrade() else { return };
        // Serving a later response (or none yet): watch that one.
        if at.is_none() || c.response.get().0 != started {
            continue;
        }
        tracing::warn!(
            timeout_ms = within.as_millis() as u64,
            "response not taken by the client in time; connection closed"
        );
        // Reset, not a graceful close: what the client has not taken is discarded.
        let _ = c.socket.set_linger(Some(Duration::ZERO));
        let _ = c.socket.shutdown(Shutdown::Both);
        return;
    }
}

/// The layer: tells the connection that a response starts.
pub async fn layer(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let conn = req.conn_data::<Rc<Connection>>().map(Rc::downgrade);
    let res = next.call(req).await?;
    if let Some(conn) = conn.and_then(|weak| weak.upgrade()) {
        let (started, _) = conn.response.get();
        conn.response
            .set((started.wrapping_add(1), Some(Instant::now())));
    }
    Ok(res)
}

#[cfg(test)]
mod tests {
    use super::*;

    const DATE: &str = "date: Sun, 06 Dec 2026 22:31:14 GMT\r\n";

    #[test]
    fn only_the_http_layers_bare_refusal_heads_are_recognised() {
        let t = Duration::from_secs(5);
        let bare = format!("HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-length: 0\r\nconnection: close\r\n{DATE}\r\n");
        let (start, error, date) = bare_refusal(bare.as_bytes(), t).unwrap();
        assert_eq!((start, error.table().1), (0, "head_too_large"));
        assert_eq!(date, DATE.as_bytes());
        // After an earlier answer, without `connection: close` (pipelined).
        let earlier = "HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}";
        let after = format!("{earlier}HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n{DATE}\r\n");
        let (start, error, _) = bare_refusal(after.as_bytes(), t).unwrap();
        assert_eq!(
            (start, error.table().1),
            (earlier.len(), "malformed_request")
        );
        let timeout = format!(
            "HTTP/1.1 408 Request Timeout\r\ncontent-length: 0\r\nconnection: close\r\n{DATE}\r\n"
        );
        assert_eq!(
            bare_refusal(timeout.as_bytes(), t).unwrap().1.table().1,
            "head_timeout"
        );
        // Answers of the application: a body, a 304 without one, a 400 with a body.
        for other in [
            format!("HTTP/1.1 400 Bad Request\r\ncontent-length: 2\r\n{DATE}\r\n{{}}"),
            format!("HTTP/1.1 304 Not Modified\r\netag: \"x\"\r\n{DATE}\r\n"),
            format!("HTTP/1.1 204 No Content\r\ncontent-length: 0\r\n{DATE}\r\n"),
            "\r\n\r\n".to_string(),
            String::new(),
        ] {
            assert!(bare_refusal(other.as_bytes(), t).is_none(), "{other}");
        }
    }

    #[test]
    fn a_problem_answer_is_a_whole_http_message() {
        let answer = problem_answer(&ApiError::MalformedRequest, DATE.as_bytes());
        let text = String::from_utf8(answer).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.1 400 Bad Request\r\n"), "{head}");
        assert!(
            head.contains(&format!("content-length: {}", body.len())),
            "{head}"
        );
        assert!(head.ends_with(DATE.trim_end()), "{head}");
        let problem: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(problem["code"], "malformed_request");
    }
}
