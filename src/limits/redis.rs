//! Activation limits shared by the replicas: the GCRA of [`crate::limits::LocalLimiter`]
//! (governor's), evaluated atomically in Redis by one Lua script per decision, on Redis
//! server time so replicas with skewed clocks agree. Headers and `Retry-After` come out the
//! same as in process. While Redis is down, [`SharedLimiter`] decides by
//! `redis.limiter_fallback`: in-process limits with `redis.fallback_quota_share` of every
//! quota and burst on each replica (`local`), or 503 (`refuse`).

use std::sync::{Arc, LazyLock};
use std::time::Duration;

use async_trait::async_trait;

use super::{policies, ActivationLimiter, Decision, LocalLimiter, Policy, PolicyState};
use crate::metrics::Metrics;
use crate::redis::{Redis, RedisFailure};
use crate::settings::{LimiterFallback, Settings};

/// GCRA as governor 0.10 computes it, in microseconds of Redis `TIME` (exact in Lua's
/// doubles until the year 2255). KEYS: per-caller and global theoretical arrival times.
/// ARGV: per-caller then global emission interval `t` and tolerance `tau = t * (burst - 1)`.
/// Returns `{1, remaining}` or `{0, wait}` for the per-caller policy, then the same for
/// the global one when the caller was admitted (as in process, a global refusal still
/// spends the caller's unit). A key expires when its state equals "never seen". Both keys
/// carry the hash tag `{<prefix>:rl}`, so in a cluster they live in one slot (the node that
/// owns it decides every activation, as the global key is in every decision anyway).
const GCRA: &str = r"
if redis.replicate_commands then redis.replicate_commands() end
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000000 + tonumber(time[2])
local function take(key, t, tau)
  local tat = tonumber(redis.call('GET', key)) or now
  local earliest = tat - tau
  if now < earliest then
    return 0, earliest - now
  end
  local nxt = math.max(tat, now) + t
  redis.call('SET', key, string.format('%.0f', nxt), 'PX', math.max(1, math.ceil((nxt - now) / 1000)))
  return 1, math.floor(math.min(now + tau + t - nxt, tau + t) / t)
end
local ok, v = take(KEYS[1], tonumber(ARGV[1]), tonumber(ARGV[2]))
if ok == 0 then return {0, v} end
local gok, gv = take(KEYS[2], tonumber(ARGV[3]), tonumber(ARGV[4]))
return {1, v, gok, gv}
";

static SCRIPT: LazyLock<redis::Script> = LazyLock::new(|| redis::Script::new(GCRA));

/// `t` and `tau` of a policy in microseconds.
fn gcra_params(p: &Policy) -> (u64, u64) {
    let t = u64::try_from(p.interval().as_micros())
        .unwrap_or(u64::MAX)
        .max(1);
    (t, t.saturating_mul(u64::from(p.burst.max(1) - 1)))
}

/// The limiter in Redis; fails instead of deciding when Redis does not answer.
pub struct RedisLimiter {
    redis: Arc<Redis>,
    caller: Policy,
    global: Policy,
    metrics: Arc<Metrics>,
}

impl RedisLimiter {
    /// A limiter for `caller` and `global` policies.
    pub fn new(redis: Arc<Redis>, caller: Policy, global: Policy, metrics: Arc<Metrics>) -> Self {
        Self {
            redis,
            caller,
            global,
            metrics,
        }
    }

    /// Takes one unit for `principal` in Redis.
    #[tracing::instrument(skip_all, name = "redis.rate_limit")]
    pub async fn try_check(&self, principal: &str) -> Result<Decision, RedisFailure> {
        let (ct, ctau) = gcra_params(&self.caller);
        let (gt, gtau) = gcra_params(&self.global);
        // One hash tag for both keys: the script touches them together (one cluster slot).
        let caller_key = self.redis.tagged_key("rl", &[self.caller.name, principal]);
        let global_key = self.redis.tagged_key("rl", &[self.global.name]);
        let out: Vec<i64> = self
            .redis
            .run("rate_limit", |mut c| async move {
                SCRIPT
                    .key(&caller_key)
                    .key(&global_key)
                    .arg(ct)
                    .arg(ctau)
                    .arg(gt)
                    .arg(gtau)
                    .invoke_async(&mut c)
                    .await
            })
            .await?;
        let n = |v: i64| u64::try_from(v).unwrap_or(0);
        let decision = match out.as_slice() {
            [0, wait] => {
                let wait = Duration::from_micros(n(*wait));
                self.metrics.rate_limit(self.caller.name, false);
                Decision::Limited {
                    states: vec![PolicyState::refused(self.caller, wait)],
                    retry_after: wait,
                }
            }
            [1, remaining, gok, gv] => {
                self.metrics.rate_limit(self.caller.name, true);
                let caller =
                    PolicyState::admitted(self.caller, u32::try_from(*remaining).unwrap_or(0));
                let admitted = *gok == 1;
                self.metrics.rate_limit(self.global.name, admitted);
                if admitted {
                    let remaining = u32::try_from(*gv).unwrap_or(0);
                    Decision::Admitted {
                        states: vec![caller, PolicyState::admitted(self.global, remaining)],
                    }
                } else {
                    let wait = Duration::from_micros(n(*gv));
                    Decision::Limited {
                        states: vec![caller, PolicyState::refused(self.global, wait)],
                        retry_after: wait,
                    }
                }
            }
            other => {
                return Err(RedisFailure::Decode(format!(
                    "rate limit script: {other:?}"
                )))
            }
        };
        Ok(decision)
    }
}

/// A policy scaled to `share` of its quota and burst (at least 1 each).
pub fn scaled(p: Policy, share: f64) -> Policy {
    // Truncation is intended: replicas * share must not exceed the whole quota.
    let part = |v: u32| ((f64::from(v) * share).floor() as u32).clamp(1, v.max(1));
    Policy {
        quota: part(p.quota),
        burst: part(p.burst),
        ..p
    }
}

enum Fallback {
    Local(Box<LocalLimiter>),
    Refuse { retry_after: Duration },
}

/// Redis limits, falling back by `redis.limiter_fallback` while Redis is down.
pub struct SharedLimiter {
    redis: Arc<Redis>,
    remote: RedisLimiter,
    fallback: Fallback,
}

impl SharedLimiter {
    /// Limits from settings.
    pub fn new(redis: Arc<Redis>, settings: &Settings, metrics: Arc<Metrics>) -> Self {
        let (caller, global) = policies(&settings.rate_limit);
        let fallback = match settings.redis.limiter_fallback {
            LimiterFallback::Local => {
                let share = settings.redis.fallback_quota_share;
                Fallback::Local(Box::new(LocalLimiter::with_policies(
                    scaled(caller, share),
                    scaled(global, share),
                    settings.rate_limit.max_tracked_callers,
                    metrics.clone(),
                )))
            }
            LimiterFallback::Refuse => Fallback::Refuse {
                // Redis may be back by the next health check.
                retry_after: settings.redis.health_interval.max(Duration::from_secs(1)),
            },
        };
        Self {
            remote: RedisLimiter::new(redis.clone(), caller, global, metrics),
            redis,
            fallback,
        }
    }
}

#[async_trait]
impl ActivationLimiter for SharedLimiter {
    /// The policies in force now: the shared ones, or the fallback's share while down.
    fn policies(&self) -> Vec<Policy> {
        match &self.fallback {
            Fallback::Local(local) if !self.redis.commands_up() => local.policies(),
            _ => vec![self.remote.caller, self.remote.global],
        }
    }

    async fn check(&self, principal: &str) -> Decision {
        match self.remote.try_check(principal).await {
            Ok(d) => d,
            Err(e) => {
                tracing::debug!(error = %e, "shared rate limit unavailable; using the fallback");
                match &self.fallback {
                    Fallback::Local(local) => local.check(principal).await,
                    Fallback::Refuse { retry_after } => Decision::Unavailable {
                        retry_after: *retry_after,
                    },
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(quota: u32, burst: u32) -> Policy {
        Policy {
            name: "per-caller",
            quota,
            window_secs: 60,
            burst,
        }
    }

    #[test]
    fn fallback_share_scales_quota_and_burst_with_a_floor_of_one() {
        assert_eq!(scaled(policy(100, 20), 0.5), policy(50, 10));
        assert_eq!(scaled(policy(10, 3), 0.5), policy(5, 1));
        assert_eq!(scaled(policy(1, 1), 0.1), policy(1, 1));
        assert_eq!(scaled(policy(10, 3), 1.0), policy(10, 3));
    }

    #[test]
    fn gcra_parameters_match_governor() {
        // 10 per minute, burst 3: one unit every 6 s, tolerance two units.
        assert_eq!(gcra_params(&policy(10, 3)), (6_000_000, 12_000_000));
        assert_eq!(gcra_params(&policy(10, 1)), (6_000_000, 0));
    }
}
