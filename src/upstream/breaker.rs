//! A consecutive-failure circuit breaker: closed, open for a while, then half-open with a
//! single probe whose outcome closes or reopens it.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// What the breaker is doing now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerState {
    Closed,
    Open,
    HalfOpen,
}

impl BreakerState {
    /// Stable lower-case name.
    pub fn name(self) -> &'static str {
        match self {
            BreakerState::Closed => "closed",
            BreakerState::Open => "open",
            BreakerState::HalfOpen => "half_open",
        }
    }
}

struct Inner {
    failures: u32,
    open_until: Option<Instant>,
    probing: bool,
}

/// The breaker; cheap to consult (one uncontended mutex).
pub struct CircuitBreaker {
    threshold: u32,
    open_for: Duration,
    inner: Mutex<Inner>,
}

impl CircuitBreaker {
    /// Opens after `threshold` consecutive failures (0 disables it) for `open_for`.
    pub fn new(threshold: u32, open_for: Duration) -> Self {
        Self {
            threshold,
            open_for,
            inner: Mutex::new(Inner {
                failures: 0,
                open_until: None,
                probing: false,
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// May a call go out? `Ok(true)` marks the half-open probe; `Err` is the time to wait.
    pub fn admit(&self) -> Result<bool, Duration> {
        let mut s = self.lock();
        match s.open_until {
            None => Ok(false),
            Some(until) => {
                let now = Instant::now();
                if now < until {
                    Err(until - now)
                } else if s.probing {
                    Err(Duration::from_secs(1))
                } else {
                    s.probing = true;
                    Ok(true)
                }
            }
        }
    }

    /// Records a call's outcome; returns the state it moved the breaker to, if it moved
    /// it (`Open` when it opened or reopened, `Closed` when a call closed it).
    pub fn record(&self, success: bool, probe: bool) -> Option<BreakerState> {
        let mut s = self.lock();
        if probe {
            s.probing = false;
        }
        if success {
            s.failures = 0;
            return s.open_until.take().map(|_| BreakerState::Closed);
        }
        s.failures = s.failures.saturating_add(1);
        if self.threshold > 0 && (probe || s.failures >= self.threshold) {
            let opened = s.open_until.is_none() || probe;
            s.open_until = Some(Instant::now() + self.open_for);
            return opened.then_some(BreakerState::Open);
        }
        None
    }

    /// Current state.
    pub fn state(&self) -> BreakerState {
        let s = self.lock();
        match s.open_until {
            None => BreakerState::Closed,
            Some(until) if Instant::now() < until => BreakerState::Open,
            Some(_) => BreakerState::HalfOpen,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_after_threshold_and_closes_after_good_probe() {
        let b = CircuitBreaker::new(3, Duration::from_millis(30));
        for _ in 0..3 {
            assert_eq!(b.admit(), Ok(false));
            b.record(false, false);
        }
        assert_eq!(b.record(false, false), None, "already open");
        assert!(b.admit().is_err());
        assert_eq!(b.state(), BreakerState::Open);
        std::thread::sleep(Duration::from_millis(40));
        assert_eq!(b.admit(), Ok(true));
        assert!(b.admit().is_err(), "one probe at a time");
        assert_eq!(b.record(true, true), Some(BreakerState::Closed));
        assert_eq!(b.state(), BreakerState::Closed);
        assert_eq!(b.admit(), Ok(false));
    }

    #[test]
    fn failed_probe_reopens() {
        let b = CircuitBreaker::new(1, Duration::from_millis(10));
        assert_eq!(b.record(false, false), Some(BreakerState::Open));
        std::thread::sleep(Duration::from_millis(15));
        assert_eq!(b.admit(), Ok(true));
        assert_eq!(b.record(false, true), Some(BreakerState::Open));
        assert_eq!(b.state(), BreakerState::Open);
    }
}
