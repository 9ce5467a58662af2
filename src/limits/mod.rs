//! Activation rate limits: per caller and global, GCRA (governor), with the IETF draft
//! `RateLimit-Policy` / `RateLimit` headers. The decision sits behind [`ActivationLimiter`]
//! so the shared implementation ([`redis::SharedLimiter`]) can replace the in-process one.

pub mod local;
pub mod redis;

pub use local::LocalLimiter;

use std::num::NonZeroU32;
use std::time::Duration;

use async_trait::async_trait;
use governor::Quota;

use crate::settings::RateLimitSettings;

/// One policy's parameters, as advertised in `RateLimit-Policy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    pub name: &'static str,
    /// Requests per window.
    pub quota: u32,
    pub window_secs: u32,
    /// Requests that may be made at once.
    pub burst: u32,
}

impl Policy {
    fn quota(&self) -> Quota {
        let per = Duration::from_secs(u64::from(self.window_secs)) / self.quota.max(1);
        Quota::with_period(per)
            .unwrap_or_else(|| Quota::per_second(NonZeroU32::MIN))
            .allow_burst(NonZeroU32::new(self.burst).unwrap_or(NonZeroU32::MIN))
    }

    /// Time to earn back one request.
    pub fn interval(&self) -> Duration {
        Duration::from_secs(u64::from(self.window_secs)) / self.quota.max(1)
    }
}

/// The state of one policy after a decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PolicyState {
    pub policy: Policy,
    /// Requests available now.
    pub remaining: u32,
    /// Seconds until the full burst is available again.
    pub reset_secs: u64,
}

impl PolicyState {
    /// The state after an admission that left `remaining` requests of the burst.
    pub fn admitted(policy: Policy, remaining: u32) -> Self {
        let missing = policy.burst.saturating_sub(remaining);
        let reset = policy.interval() * missing;
        PolicyState {
            policy,
            remaining,
            reset_secs: reset.as_secs() + u64::from(reset.subsec_nanos() > 0),
        }
    }

    /// The state after a refusal; a retry can succeed after `wait`.
    pub fn refused(policy: Policy, wait: Duration) -> Self {
        let full = policy.interval() * policy.burst.saturating_sub(1) + wait;
        PolicyState {
            policy,
            remaining: 0,
            reset_secs: full.as_secs() + u64::from(full.subsec_nanos() > 0),
        }
    }
}

/// The outcome of an activation attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Go ahead: one unit was taken from every policy.
    Admitted {
        /// Per-caller then global.
        states: Vec<PolicyState>,
    },
    /// A quota is spent (429); a retry can succeed after `retry_after`.
    Limited {
        /// Per-caller then global; a policy not consulted is absent.
        states: Vec<PolicyState>,
        retry_after: Duration,
    },
    /// No decision could be made (the shared store is down and the policy is to refuse):
    /// 503, not 429; a retry may succeed after `retry_after`.
    Unavailable { retry_after: Duration },
}

impl Decision {
    /// Stable lower-case name, for traces.
    pub fn name(&self) -> &'static str {
        match self {
            Decision::Admitted { .. } => "admitted",
            Decision::Limited { .. } => "limited",
            Decision::Unavailable { .. } => "unavailable",
        }
    }

    /// Whether the activation may go ahead.
    pub fn is_admitted(&self) -> bool {
        matches!(self, Decision::Admitted { .. })
    }

    /// The state of each policy consulted (none when unavailable).
    pub fn states(&self) -> &[PolicyState] {
        match self {
            Decision::Admitted { states } | Decision::Limited { states, .. } => states,
            Decision::Unavailable { .. } => &[],
        }
    }

    /// When not admitted: the time until a retry can succeed.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Decision::Admitted { .. } => None,
            Decision::Limited { retry_after, .. } | Decision::Unavailable { retry_after } => {
                Some(*retry_after)
            }
        }
    }

    /// `RateLimit-Policy` header value.
    pub fn policy_header(policies: &[Policy]) -> String {
        policies
            .iter()
            .map(|p| format!("\"{}\";q={};w={}", p.name, p.quota, p.window_secs))
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// `RateLimit` header value.
    pub fn limit_header(&self) -> String {
        self.states()
            .iter()
            .map(|s| format!("\"{}\";r={};t={}", s.policy.name, s.remaining, s.reset_secs))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// Decides whether an activation may go ahead.
#[async_trait]
pub trait ActivationLimiter: Send + Sync {
    /// The policies, for `RateLimit-Policy`.
    fn policies(&self) -> Vec<Policy>;
    /// Takes one unit for `principal`, or refuses.
    async fn check(&self, principal: &str) -> Decision;
}

/// The policies from settings.
pub fn policies(s: &RateLimitSettings) -> (Policy, Policy) {
    (
        Policy {
            name: "per-caller",
            quota: s.per_caller_per_minute,
            window_secs: 60,
            burst: s.per_caller_burst,
        },
        Policy {
            name: "global",
            quota: s.global_per_minute,
            window_secs: 60,
            burst: s.global_burst,
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policy_header_lists_both() {
        let (c, g) = policies(&RateLimitSettings::default());
        assert_eq!(
            Decision::policy_header(&[c, g]),
            "\"per-caller\";q=10;w=60, \"global\";q=100;w=60"
        );
    }
}
