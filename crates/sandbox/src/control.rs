//! State shared by the simulator's workers and its handle: sessions, fault knobs, call
//! counters and the last request's headers, next to the vendor data store.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use crate::state::Store;
use crate::{ExpiryStyle, SimulatorConfig, VendorStyle};

/// A vendor operation, as counted by the simulator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Operation {
    Login,
    CreateAudience,
    UpdateAudience,
    ActivateAudience,
    LoadAudience,
    DeleteAudience,
    CreateCampaign,
    LoadPlatformAccounts,
}

impl Operation {
    /// Every operation, in counter order.
    pub(crate) const ALL: [Operation; 8] = [
        Operation::Login,
        Operation::CreateAudience,
        Operation::UpdateAudience,
        Operation::ActivateAudience,
        Operation::LoadAudience,
        Operation::DeleteAudience,
        Operation::CreateCampaign,
        Operation::LoadPlatformAccounts,
    ];

    /// The name used by `call_count` and `GET /__sim/stats`.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Operation::Login => "login",
            Operation::CreateAudience => "createAudience",
            Operation::UpdateAudience => "updateAudience",
            Operation::ActivateAudience => "activateAudience",
            Operation::LoadAudience => "loadAudience",
            Operation::DeleteAudience => "deleteAudience",
            Operation::CreateCampaign => "createCampaign",
            Operation::LoadPlatformAccounts => "loadPlatformAccounts",
        }
    }

    /// The operation called `name`, as `name` gives it.
    pub(crate) fn named(name: &str) -> Option<Operation> {
        Operation::ALL.into_iter().find(|op| op.name() == name)
    }

    /// Whether the operation changes vendor data when the vendor carries it out.
    pub(crate) fn is_write(self) -> bool {
        matches!(
            self,
            Operation::CreateAudience
                | Operation::UpdateAudience
                | Operation::ActivateAudience
                | Operation::DeleteAudience
                | Operation::CreateCampaign
        )
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// Locks a mutex, taking over the data if another thread panicked while holding it: every
/// critical section here leaves the data consistent, so poisoning carries no meaning.
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// One of the instances behind the load balancer: 0 for every style but `azure`, whose
/// callers are spread over two.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Instance(pub(crate) u8);

/// A session: known only to the instance that opened it.
struct Session {
    instance: Instance,
    opened: Instant,
    expires: Instant,
}

/// Everything one simulator shares between its worker threads and its handle.
pub(crate) struct Shared {
    pub(crate) username: String,
    pub(crate) password: String,
    expiry_style: Mutex<ExpiryStyle>,
    vendor_style: Mutex<VendorStyle>,
    session_ttl: Duration,
    pub(crate) store: Mutex<Store>,
    sessions: Mutex<HashMap<String, Session>>,
    /// The instance the next caller without an affinity cookie lands on (`azure` style).
    next_instance: AtomicU64,
    latency_nanos: AtomicU64,
    error_rate_bits: AtomicU64,
    down: AtomicBool,
    counters: [AtomicU64; Operation::ALL.len()],
    /// Writes carried out per operation: unlike `counters`, no refused, failed or
    /// session-rejected call is in them, so a test can tell a duplicate write from a retry
    /// the vendor never ran.
    writes: [AtomicU64; Operation::ALL.len()],
    last_headers: Mutex<Vec<(String, String)>>,
}

impl Shared {
    pub(crate) fn new(config: SimulatorConfig) -> Self {
        let shared = Shared {
            store: Mutex::new(Store::seeded(config.seed_audiences)),
            username: config.username,
            password: config.password,
            expiry_style: Mutex::new(config.expiry_style),
            vendor_style: Mutex::new(config.style),
            session_ttl: config.session_ttl,
            sessions: Mutex::new(HashMap::new()),
            next_instance: AtomicU64::new(0),
            latency_nanos: AtomicU64::new(0),
            error_rate_bits: AtomicU64::new(0.0_f64.to_bits()),
            down: AtomicBool::new(false),
            counters: Default::default(),
            writes: Default::default(),
            last_headers: Mutex::new(Vec::new()),
        };
        shared.set_latency(config.latency);
        shared.set_error_rate(config.error_rate);
        shared
    }

    /// Opens a session on `instance` and returns its cookie value.
    pub(crate) fn open_session(&self, instance: Instance) -> String {
        let token: [u8; 32] = rand::random();
        let token: String = token.iter().map(|byte| format!("{byte:02x}")).collect();
        let now = Instant::now();
        let mut sessions = lock(&self.sessions);
        sessions.retain(|_, session| session.expires > now);
        let session = Session {
            instance,
            opened: now,
            expires: now + self.session_ttl,
        };
        sessions.insert(token.clone(), session);
        token
    }

    /// Whether `token` names a session of `instance` that has not expired.
    pub(crate) fn session_is_live(&self, token: &str, instance: Instance) -> bool {
        lock(&self.sessions)
            .get(token)
            .is_some_and(|s| s.instance == instance && s.expires > Instant::now())
    }

    /// Sliding expiration, as ASP.NET Core's cookie authentication does it: a live session
    /// past half its lifetime gets a new cookie (a new session from now) on its next
    /// answer; the old one stays valid until it expires.
    pub(crate) fn slide(&self, token: &str) -> Option<String> {
        let instance = {
            let sessions = lock(&self.sessions);
            let session = sessions.get(token)?;
            (session.opened.elapsed() > self.session_ttl / 2).then_some(session.instance)?
        };
        Some(self.open_session(instance))
    }

    /// Makes every session `by` older (its expiry comes that much closer).
    pub(crate) fn age_sessions(&self, by: Duration) {
        for session in lock(&self.sessions).values_mut() {
            session.opened = session.opened.checked_sub(by).unwrap_or(session.opened);
            session.expires = session.expires.checked_sub(by).unwrap_or(session.opened);
        }
    }

    /// The instance for a caller without an affinity cookie: round robin.
    pub(crate) fn next_instance(&self) -> Instance {
        Instance(u8::from(
            self.next_instance.fetch_add(1, Ordering::Relaxed) % 2 == 1,
        ))
    }

    pub(crate) fn expire_sessions(&self) {
        lock(&self.sessions).clear();
    }

    pub(crate) fn expiry_style(&self) -> ExpiryStyle {
        *lock(&self.expiry_style)
    }

    pub(crate) fn set_expiry_style(&self, style: ExpiryStyle) {
        *lock(&self.expiry_style) = style;
    }

    pub(crate) fn vendor_style(&self) -> VendorStyle {
        *lock(&self.vendor_style)
    }

    pub(crate) fn set_vendor_style(&self, style: VendorStyle) {
        *lock(&self.vendor_style) = style;
    }

    pub(crate) fn count(&self, operation: Operation) {
        self.counters[operation.index()].fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn call_count(&self, operation: Operation) -> u64 {
        self.counters[operation.index()].load(Ordering::Relaxed)
    }

    /// Records that the vendor carried out `operation`; only writes are counted.
    pub(crate) fn count_carried_out(&self, operation: Operation) {
        if operation.is_write() {
            self.writes[operation.index()].fetch_add(1, Ordering::Relaxed);
        }
    }

    pub(crate) fn write_count(&self, operation: Operation) -> u64 {
        self.writes[operation.index()].load(Ordering::Relaxed)
    }

    pub(crate) fn latency(&self) -> Duration {
        Duration::from_nanos(self.latency_nanos.load(Ordering::Relaxed))
    }

    pub(crate) fn set_latency(&self, latency: Duration) {
        let nanos = u64::try_from(latency.as_nanos()).unwrap_or(u64::MAX);
        self.latency_nanos.store(nanos, Ordering::Relaxed);
    }

    pub(crate) fn error_rate(&self) -> f64 {
        f64::from_bits(self.error_rate_bits.load(Ordering::Relaxed))
    }

    /// Sets the share of calls answered 500; clamped to 0.0-1.0, NaN counts as 0.0.
    pub(crate) fn set_error_rate(&self, rate: f64) {
        let rate = if rate.is_nan() {
            0.0
        } else {
            rate.clamp(0.0, 1.0)
        };
        self.error_rate_bits
            .store(rate.to_bits(), Ordering::Relaxed);
    }

    /// Draws whether this call is one of the injected 500s.
    pub(crate) fn roll_error(&self) -> bool {
        let rate = self.error_rate();
        rate > 0.0 && rand::random::<f64>() < rate
    }

    pub(crate) fn is_down(&self) -> bool {
        self.down.load(Ordering::Relaxed)
    }

    pub(crate) fn set_down(&self, down: bool) {
        self.down.store(down, Ordering::Relaxed);
    }

    pub(crate) fn record_headers(&self, headers: Vec<(String, String)>) {
        *lock(&self.last_headers) = headers;
    }

    pub(crate) fn last_headers(&self) -> Vec<(String, String)> {
        lock(&self.last_headers).clone()
    }
}
