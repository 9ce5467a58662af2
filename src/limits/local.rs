//! The in-process limiter: one replica's view, in governor's GCRA, with the per-caller
//! state bounded so that many distinct callers cannot grow memory without limit.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use governor::clock::{Clock, DefaultClock};
use governor::middleware::NoOpMiddleware;
use governor::middleware::StateInformationMiddleware;
use governor::nanos::Nanos;
use governor::state::{InMemoryState, NotKeyed, StateStore};
use governor::RateLimiter;

use super::{policies, ActivationLimiter, Decision, Policy, PolicyState};
use crate::metrics::Metrics;
use crate::settings::RateLimitSettings;

/// Bounded keyed state for governor: the least recently seen callers are forgotten beyond
/// `capacity`, and idle ones after the time their burst takes to refill.
#[derive(Clone)]
pub struct BoundedStore {
    cells: moka::sync::Cache<Arc<str>, Arc<AtomicU64>>,
}

const EMPTY: u64 = u64::MAX;

impl BoundedStore {
    fn new(capacity: u64, idle: Duration) -> Self {
        Self {
            // LRU, not moka's default TinyLFU: TinyLFU may refuse to admit a new caller's
            // cell when the store is full, and a caller without a cell gets a fresh burst on
            // every request.
            cells: moka::sync::Cache::builder()
                .max_capacity(capacity)
                .time_to_idle(idle)
                .eviction_policy(moka::policy::EvictionPolicy::lru())
                .build(),
        }
    }

    /// Callers tracked now.
    pub fn len(&self) -> u64 {
        self.cells.run_pending_tasks();
        self.cells.entry_count()
    }

    /// Whether no caller is tracked.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl StateStore for BoundedStore {
    type Key = Arc<str>;

    fn measure_and_replace<T, F, E>(&self, key: &Arc<str>, f: F) -> Result<T, E>
    where
        F: Fn(Option<Nanos>) -> Result<(T, Nanos), E>,
    {
        let cell = self
            .cells
            .get_with_by_ref(key, || Arc::new(AtomicU64::new(EMPTY)));
        let mut prev = cell.load(Ordering::Acquire);
        loop {
            let arg = (prev != EMPTY).then(|| Nanos::from(prev));
            let (out, next) = f(arg)?;
            match cell.compare_exchange_weak(
                prev,
                next.as_u64(),
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => return Ok(out),
                Err(actual) => prev = actual,
            }
        }
    }
}

type Keyed = RateLimiter<Arc<str>, BoundedStore, DefaultClock, StateInformationMiddleware>;
type Direct = RateLimiter<NotKeyed, InMemoryState, DefaultClock, StateInformationMiddleware>;

/// The in-process limiter (one replica's view).
pub struct LocalLimiter {
    store: BoundedStore,
    per_caller: (Policy, Keyed),
    global: (Policy, Direct),
    clock: DefaultClock,
    metrics: Arc<Metrics>,
}

impl LocalLimiter {
    /// Limiter from settings.
    pub fn new(s: &RateLimitSettings, metrics: Arc<Metrics>) -> Self {
        let (caller, global) = policies(s);
        Self::with_policies(caller, global, s.max_tracked_callers, metrics)
    }

    /// Limiter with explicit policies (the Redis fallback uses a share of the quota).
    pub fn with_policies(
        caller: Policy,
        global: Policy,
        max_callers: u64,
        metrics: Arc<Metrics>,
    ) -> Self {
        let clock = DefaultClock::default();
        let refill = caller.interval() * caller.burst.max(1);
        let store = BoundedStore::new(max_callers, refill.max(Duration::from_secs(1)));
        Self {
            store: store.clone(),
            per_caller: (
                caller,
                RateLimiter::<
                    Arc<str>,
                    BoundedStore,
                    DefaultClock,
                    NoOpMiddleware<<DefaultClock as Clock>::Instant>,
                >::new(caller.quota(), store.clone(), clock.clone())
                .with_middleware::<StateInformationMiddleware>(),
            ),
            global: (
                global,
                RateLimiter::direct_with_clock(global.quota(), clock.clone())
                    .with_middleware::<StateInformationMiddleware>(),
            ),
            clock,
            metrics,
        }
    }

    /// Callers tracked now (bounded by `max_tracked_callers`).
    pub fn tracked_callers(&self) -> u64 {
        self.store.len()
    }
}

#[async_trait]
impl ActivationLimiter for LocalLimiter {
    fn policies(&self) -> Vec<Policy> {
        vec![self.per_caller.0, self.global.0]
    }

    async fn check(&self, principal: &str) -> Decision {
        let key: Arc<str> = principal.into();
        let (cp, cl) = &self.per_caller;
        let caller_state = match cl.check_key(&key) {
            Ok(snap) => PolicyState::admitted(*cp, snap.remaining_burst_capacity()),
            Err(not_until) => {
                let wait = not_until.wait_time_from(self.clock.now());
                self.metrics.rate_limit(cp.name, false);
                return Decision::Limited {
                    states: vec![PolicyState::refused(*cp, wait)],
                    retry_after: wait,
                };
            }
        };
        self.metrics.rate_limit(cp.name, true);
        let (gp, gl) = &self.global;
        match gl.check() {
            Ok(snap) => {
                self.metrics.rate_limit(gp.name, true);
                Decision::Admitted {
                    states: vec![
                        caller_state,
                        PolicyState::admitted(*gp, snap.remaining_burst_capacity()),
                    ],
                }
            }
            Err(not_until) => {
                let wait = not_until.wait_time_from(self.clock.now());
                self.metrics.rate_limit(gp.name, false);
                Decision::Limited {
                    states: vec![caller_state, PolicyState::refused(*gp, wait)],
                    retry_after: wait,
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limiter(per_min: u32, burst: u32, global: u32, max_callers: u64) -> LocalLimiter {
        let s = RateLimitSettings {
            enabled: true,
            per_caller_per_minute: per_min,
            per_caller_burst: burst,
            global_per_minute: global,
            global_burst: global,
            max_tracked_callers: max_callers,
        };
        LocalLimiter::new(&s, Arc::new(Metrics::new()))
    }

    #[tokio::test]
    async fn remaining_goes_down_then_refuses() {
        let l = limiter(10, 3, 1000, 100);
        let mut remaining = Vec::new();
        for _ in 0..3 {
            let d = l.check("alice").await;
            assert!(d.is_admitted());
            remaining.push(d.states()[0].remaining);
        }
        assert_eq!(remaining, [2, 1, 0]);
        let d = l.check("alice").await;
        assert!(!d.is_admitted());
        let wait = d.retry_after().unwrap();
        assert!(
            wait <= Duration::from_secs(6) && wait > Duration::ZERO,
            "{wait:?}"
        );
        assert!(
            l.check("bob").await.is_admitted(),
            "callers are independent"
        );
        assert_eq!(
            d.limit_header(),
            format!("\"per-caller\";r=0;t={}", d.states()[0].reset_secs)
        );
    }

    #[tokio::test]
    async fn keyed_state_is_bounded() {
        let l = limiter(10, 3, 1_000_000, 100);
        for i in 0..5_000 {
            l.check(&format!("caller-{i}")).await;
        }
        assert!(l.tracked_callers() <= 100, "{}", l.tracked_callers());
    }
}
