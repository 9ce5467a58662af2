//! The audience read cache (moka) and its HTTP semantics.
//!
//! One entry per (upstream identity, audience id) holds the three public representations
//! (audience, insights, uploads) already serialized, with their strong ETags, so a hit does
//! no serialization at all. Concurrent misses for one audience make one upstream call (moka's
//! per-key compute lock); writes through this gateway drop the entry, and a fetch that raced
//! with a write never stores what it read. Expired entries stay usable for `stale_secs` when
//! the upstream fails (stale-if-error).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix_web::http::header::HeaderValue;
use bytes::Bytes;
use moka::ops::compute::Op;
use serde::de::IgnoredAny;
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::metrics::Metrics;
use crate::settings::CacheSettings;
use crate::upstream::api::AudienceDto;
use crate::upstream::{CallContext, UpstreamClient, UpstreamError};

/// Which representation of an audience.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum View {
    Audience,
    Insights,
    Uploads,
}

/// One serialized representation and its strong ETag.
#[derive(Debug, Clone)]
pub struct Representation {
    pub body: Bytes,
    pub etag: String,
    /// `etag` as a header value, built once: a hit only clones it.
    pub etag_header: HeaderValue,
}

impl Representation {
    fn empty() -> Self {
        Self {
            body: Bytes::new(),
            etag: String::new(),
            etag_header: HeaderValue::from_static(""),
        }
    }

    fn of<T: Serialize>(value: &T) -> Result<Self, UpstreamError> {
        let body = serde_json::to_vec(value)
            .map_err(|e| UpstreamError::Failure(format!("serialize: {e}")))?;
        let etag = strong_etag(&body);
        Ok(Self {
            // Quotes and hex digits only: always a valid header value.
            etag_header: HeaderValue::from_str(&etag)
                .map_err(|e| UpstreamError::Failure(format!("etag: {e}")))?,
            etag,
            body: Bytes::from(body),
        })
    }

    /// The representation of `view`, from the vendor object.
    fn of_view(dto: AudienceDto, view: View) -> Result<Self, UpstreamError> {
        match view {
            View::Audience => Self::of(&dto.into_audience()),
            View::Insights => Self::of(&dto.to_insights()),
            View::Uploads => Self::of(&dto.to_uploads()),
        }
    }
}

/// A strong ETag from the body bytes (stable across replicas and restarts).
pub fn strong_etag(body: &[u8]) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let digest = Sha256::digest(body);
    let mut etag = String::with_capacity(34);
    etag.push('"');
    for b in &digest[..16] {
        etag.push(char::from(HEX[usize::from(b >> 4)]));
        etag.push(char::from(HEX[usize::from(b & 0x0f)]));
    }
    etag.push('"');
    etag
}

/// A cached audience with its three representations.
#[derive(Debug)]
pub struct CachedAudience {
    pub audience: Representation,
    pub insights: Representation,
    pub uploads: Representation,
    fetched: Instant,
}

impl CachedAudience {
    /// Builds all representations from the vendor object.
    pub fn from_dto(dto: AudienceDto) -> Result<Self, UpstreamError> {
        Ok(Self {
            insights: Representation::of(&dto.to_insights())?,
            uploads: Representation::of(&dto.to_uploads())?,
            audience: Representation::of(&dto.into_audience())?,
            fetched: Instant::now(),
        })
    }

    /// Holds only `rep` as `view`; the other two representations stay empty. For reads
    /// that are neither stored nor asked for another view (the cache is disabled).
    fn only(view: View, rep: Representation) -> Self {
        let mut entry = Self {
            audience: Representation::empty(),
            insights: Representation::empty(),
            uploads: Representation::empty(),
            fetched: Instant::now(),
        };
        *match view {
            View::Audience => &mut entry.audience,
            View::Insights => &mut entry.insights,
            View::Uploads => &mut entry.uploads,
        } = rep;
        entry
    }

    /// The representation for a view.
    pub fn view(&self, view: View) -> &Representation {
        match view {
            View::Audience => &self.audience,
            View::Insights => &self.insights,
            View::Uploads => &self.uploads,
        }
    }

    fn weight(&self) -> u32 {
        let bytes = self.audience.body.len() + self.insights.body.len() + self.uploads.body.len();
        // Bodies plus ETags, key and bookkeeping.
        u32::try_from(bytes + 256).unwrap_or(u32::MAX)
    }
}

/// How a read was answered, for `Cache-Status` and `Cache-Control`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Fresh entry; seconds of freshness left.
    Hit { ttl: u64 },
    /// Fetched because absent or expired.
    Miss { ttl: u64 },
    /// Fetched because the caller sent `Cache-Control: no-cache`.
    Refreshed { ttl: u64 },
    /// Expired entry served because the upstream failed; seconds past expiry.
    Stale { age_past_ttl: u64 },
    /// The cache is disabled.
    Bypass,
}

impl Outcome {
    /// RFC 9211 `Cache-Status` value.
    pub fn cache_status(self) -> String {
        match self {
            Outcome::Hit { ttl } => format!("audience-gateway; hit; ttl={ttl}"),
            Outcome::Miss { ttl } => format!("audience-gateway; fwd=uri-miss; stored; ttl={ttl}"),
            Outcome::Refreshed { ttl } => {
                format!("audience-gateway; fwd=request; stored; ttl={ttl}")
            }
            Outcome::Stale { age_past_ttl } => {
                format!("audience-gateway; fwd=stale; ttl=-{age_past_ttl}; detail=stale-if-error")
            }
            Outcome::Bypass => "audience-gateway; fwd=bypass".into(),
        }
    }

    /// `Cache-Control` and `Cache-Status` as header values.
    fn header_values(self) -> (HeaderValue, HeaderValue) {
        (
            header_value(self.cache_control()),
            header_value(self.cache_status()),
        )
    }

    /// `Cache-Control` value for the caller.
    pub fn cache_control(self) -> String {
        match self {
            Outcome::Hit { ttl } | Outcome::Miss { ttl } | Outcome::Refreshed { ttl } => {
                format!("private, max-age={ttl}")
            }
            Outcome::Stale { .. } | Outcome::Bypass => "private, max-age=0".into(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Key {
    identity: Arc<str>,
    id: i64,
}

/// The audience cache.
pub struct AudienceCache {
    enabled: bool,
    ttl: Duration,
    stale: Duration,
    entries: moka::future::Cache<Key, Arc<CachedAudience>>,
    /// Platform accounts per upstream identity, serialized, with their fetch time (kept
    /// for the stale window too, like audiences).
    accounts: moka::future::Cache<Arc<str>, (Bytes, Instant)>,
    /// Bumped by every write; a fetch that saw another value does not store.
    epoch: AtomicU64,
    /// `Cache-Control` and `Cache-Status` of a hit, by seconds of freshness left (up to
    /// [`HIT_HEADER_TABLE`]), built once: a hit copies two values instead of formatting.
    hit_headers: Vec<(HeaderValue, HeaderValue)>,
    /// The same for reads with the cache disabled (always the same two values).
    bypass_headers: (HeaderValue, HeaderValue),
    metrics: Arc<Metrics>,
}

/// Longest freshness, in seconds, whose hit headers are built in advance.
const HIT_HEADER_TABLE: u64 = 600;

/// A header value from text this module formats (ASCII, no control characters).
fn header_value(text: String) -> HeaderValue {
    HeaderValue::from_maybe_shared(Bytes::from(text))
        .unwrap_or_else(|_| HeaderValue::from_static(""))
}

impl AudienceCache {
    /// A cache sized in bytes.
    pub fn new(s: &CacheSettings, metrics: Arc<Metrics>) -> Self {
        let ttl = Duration::from_secs(s.ttl_secs);
        let stale = Duration::from_secs(s.stale_secs);
        Self {
            enabled: s.enabled && s.ttl_secs > 0,
            ttl,
            stale,
            entries: moka::future::Cache::builder()
                .max_capacity(s.max_bytes)
                .weigher(|_k: &Key, v: &Arc<CachedAudience>| v.weight())
                .time_to_live(ttl + stale)
                .build(),
            accounts: moka::future::Cache::builder()
                .max_capacity(64)
                .time_to_live((ttl + stale).max(Duration::from_secs(1)))
                .build(),
            epoch: AtomicU64::new(0),
            hit_headers: (0..=s.ttl_secs.min(HIT_HEADER_TABLE))
                .map(|ttl| Outcome::Hit { ttl }.header_values())
                .collect(),
            bypass_headers: Outcome::Bypass.header_values(),
            metrics,
        }
    }

    /// `Cache-Control` and `Cache-Status` for an outcome.
    pub fn header_values(&self, outcome: Outcome) -> (HeaderValue, HeaderValue) {
        match outcome {
            Outcome::Hit { ttl } => usize::try_from(ttl)
                .ok()
                .and_then(|i| self.hit_headers.get(i))
                .cloned()
                .unwrap_or_else(|| outcome.header_values()),
            Outcome::Bypass => self.bypass_headers.clone(),
            _ => outcome.header_values(),
        }
    }

    /// A fresh entry for `(identity, id)`, if the cache holds one: the read that needs no
    /// upstream call, no lock and no waiting. Counts a hit; anything else is left to
    /// [`AudienceCache::get`].
    pub async fn fresh(
        &self,
        identity: Arc<str>,
        id: i64,
    ) -> Option<(Arc<CachedAudience>, Outcome)> {
        if !self.enabled {
            return None;
        }
        let entry = self.entries.get(&Key { identity, id }).await?;
        let ttl = self.ttl_left(&entry)?;
        self.metrics.cache("hit");
        Some((entry, Outcome::Hit { ttl }))
    }

    fn ttl_left(&self, e: &CachedAudience) -> Option<u64> {
        self.fresh_for(e.fetched)
    }

    /// Whole seconds of freshness left for something fetched at `fetched` (None: expired).
    fn fresh_for(&self, fetched: Instant) -> Option<u64> {
        self.ttl
            .checked_sub(fetched.elapsed())
            .filter(|d| !d.is_zero())
            .map(|d| d.as_secs().max(1))
    }

    /// Reads an audience through the cache. `refresh` forces an upstream call.
    pub async fn get(
        &self,
        upstream: &UpstreamClient,
        ctx: &CallContext,
        id: i64,
        refresh: bool,
    ) -> Result<(Arc<CachedAudience>, Outcome), UpstreamError> {
        if !self.enabled {
            let dto = upstream.load_audience(ctx, id).await?;
            return Ok((Arc::new(CachedAudience::from_dto(dto)?), Outcome::Bypass));
        }
        let key = Key {
            identity: upstream.identity(),
            id,
        };
        let existing = self.entries.get(&key).await;
        if !refresh {
            if let Some(e) = &existing {
                if let Some(ttl) = self.ttl_left(e) {
                    self.metrics.cache("hit");
                    return Ok((e.clone(), Outcome::Hit { ttl }));
                }
            }
        }
        match self.fill(upstream, ctx, key, refresh).await {
            Ok((entry, fetched)) => {
                let ttl = self.ttl_left(&entry).unwrap_or(0);
                let outcome = match (fetched, refresh) {
                    (false, _) => Outcome::Hit { ttl },
                    (true, true) => Outcome::Refreshed { ttl },
                    (true, false) => Outcome::Miss { ttl },
                };
                self.metrics.cache(if fetched { "miss" } else { "hit" });
                Ok((entry, outcome))
            }
            Err(err) => self.stale_if_error(err, existing.map(|e| (e.fetched, e))),
        }
    }

    /// Stale-if-error, for audiences and platform accounts alike: a transient upstream
    /// failure is answered with the copy fetched at `fetched` while it is within the stale
    /// window; anything else stays an error.
    fn stale_if_error<T>(
        &self,
        err: UpstreamError,
        existing: Option<(Instant, T)>,
    ) -> Result<(T, Outcome), UpstreamError> {
        match existing {
            Some((fetched, value))
                if err.is_transient() && fetched.elapsed() < self.ttl + self.stale =>
            {
                tracing::warn!(error = %err, "upstream failed; serving a stale copy");
                self.metrics.cache("stale");
                let past = fetched.elapsed().saturating_sub(self.ttl).as_secs();
                Ok((value, Outcome::Stale { age_past_ttl: past }))
            }
            _ => Err(err),
        }
    }

    /// [`AudienceCache::get`] for a caller that reads only `view` of the entry: with the
    /// cache disabled only that representation is built (the other two are left empty),
    /// saving two serializations and two hashes per read, and a read of the audience
    /// itself skips the upload history while decoding.
    pub async fn get_view(
        &self,
        upstream: &UpstreamClient,
        ctx: &CallContext,
        id: i64,
        refresh: bool,
        view: View,
    ) -> Result<(Arc<CachedAudience>, Outcome), UpstreamError> {
        if !self.enabled {
            let rep = match view {
                View::Audience => {
                    let dto = upstream.load_audience::<IgnoredAny>(ctx, id).await?;
                    Representation::of(&dto.into_audience())?
                }
                other => Representation::of_view(upstream.load_audience(ctx, id).await?, other)?,
            };
            return Ok((Arc::new(CachedAudience::only(view, rep)), Outcome::Bypass));
        }
        self.get(upstream, ctx, id, refresh).await
    }

    /// Fetches under the per-key lock; returns the entry and whether this call fetched it.
    async fn fill(
        &self,
        upstream: &UpstreamClient,
        ctx: &CallContext,
        key: Key,
        refresh: bool,
    ) -> Result<(Arc<CachedAudience>, bool), UpstreamError> {
        let id = key.id;
        let mut fetched: Option<Arc<CachedAudience>> = None;
        let slot = &mut fetched;
        let result = self
            .entries
            .entry(key)
            .and_try_compute_with(move |current| async move {
                // Someone else refreshed it while we waited for the key lock.
                if let Some(e) = current {
                    if !refresh && self.ttl_left(e.value()).is_some() {
                        return Ok(Op::Nop);
                    }
                }
                let epoch = self.epoch.load(Ordering::Acquire);
                let dto = upstream.load_audience(ctx, id).await?;
                let entry = Arc::new(CachedAudience::from_dto(dto)?);
                *slot = Some(entry.clone());
                if self.epoch.load(Ordering::Acquire) == epoch {
                    Ok(Op::Put(entry))
                } else {
                    Ok(Op::Nop)
                }
            })
            .await?;
        if let Some(entry) = fetched {
            return Ok((entry, true));
        }
        match result.into_entry() {
            Some(e) => Ok((e.into_value(), false)),
            None => Err(UpstreamError::Failure(
                "cache fill produced no entry".into(),
            )),
        }
    }

    /// The platform-account list (serialized, without access tokens), cached per identity
    /// with the same freshness, coalescing and stale-if-error rules as audiences.
    pub async fn platform_accounts(
        &self,
        upstream: &UpstreamClient,
        ctx: &CallContext,
    ) -> Result<(Bytes, Outcome), UpstreamError> {
        let load = || async {
            let list = crate::domain::PlatformAccountList {
                items: upstream.platform_accounts(ctx).await?,
            };
            serde_json::to_vec(&list)
                .map(Bytes::from)
                .map_err(|e| UpstreamError::Failure(format!("serialize: {e}")))
        };
        if !self.enabled {
            return Ok((load().await?, Outcome::Bypass));
        }
        let identity = upstream.identity();
        let existing = self.accounts.get(&identity).await;
        if let Some((body, fetched)) = &existing {
            if let Some(ttl) = self.fresh_for(*fetched) {
                self.metrics.cache("hit");
                return Ok((body.clone(), Outcome::Hit { ttl }));
            }
        }
        let mut fetched_now = None;
        let slot = &mut fetched_now;
        let result = self
            .accounts
            .entry(identity)
            .and_try_compute_with(move |current| async move {
                // Someone else refreshed it while we waited for the key lock.
                if current.is_some_and(|e| self.fresh_for(e.value().1).is_some()) {
                    return Ok(Op::Nop);
                }
                let body = load().await?;
                *slot = Some(body.clone());
                Ok::<_, UpstreamError>(Op::Put((body, Instant::now())))
            })
            .await;
        match (result, fetched_now) {
            (Ok(_), Some(body)) => {
                self.metrics.cache("miss");
                Ok((
                    body,
                    Outcome::Miss {
                        ttl: self.ttl.as_secs(),
                    },
                ))
            }
            (Ok(r), None) => match r.into_entry() {
                Some(e) => {
                    let (body, fetched) = e.into_value();
                    self.metrics.cache("hit");
                    Ok((
                        body,
                        Outcome::Hit {
                            ttl: self.fresh_for(fetched).unwrap_or(0),
                        },
                    ))
                }
                None => Err(UpstreamError::Failure(
                    "cache fill produced no entry".into(),
                )),
            },
            (Err(err), _) => self.stale_if_error(err, existing.map(|(body, at)| (at, body))),
        }
    }

    /// Drops an audience after a write, so no later read sees the old version.
    pub async fn evict(&self, identity: &Arc<str>, id: i64) {
        self.epoch.fetch_add(1, Ordering::AcqRel);
        self.entries
            .invalidate(&Key {
                identity: identity.clone(),
                id,
            })
            .await;
    }

    /// Drops everything (e.g. after missing invalidation messages).
    pub fn clear(&self) {
        self.epoch.fetch_add(1, Ordering::AcqRel);
        self.entries.invalidate_all();
    }

    /// Entries and weighted size, for tests and diagnostics.
    pub async fn usage(&self) -> (u64, u64) {
        self.entries.run_pending_tasks().await;
        (self.entries.entry_count(), self.entries.weighted_size())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn etag_is_strong_and_stable() {
        let a = strong_etag(b"{\"id\":1}");
        // SHA-256 of `{"id":1}`, first 16 bytes in lower-case hex, quoted.
        assert_eq!(a, "\"037c9214eef74cc3887f3a4f085b4e17\"");
        assert_eq!(a, strong_etag(b"{\"id\":1}"));
        assert_ne!(a, strong_etag(b"{\"id\":2}"));
        assert!(a.starts_with('"') && !a.starts_with("W/"));
    }

    #[test]
    fn header_values_follow_rfc9211() {
        assert_eq!(
            Outcome::Hit { ttl: 12 }.cache_status(),
            "audience-gateway; hit; ttl=12"
        );
        assert_eq!(
            Outcome::Hit { ttl: 12 }.cache_control(),
            "private, max-age=12"
        );
        assert!(Outcome::Stale { age_past_ttl: 3 }
            .cache_status()
            .contains("fwd=stale"));
        assert_eq!(
            Outcome::Stale { age_past_ttl: 3 }.cache_control(),
            "private, max-age=0"
        );
    }
}
