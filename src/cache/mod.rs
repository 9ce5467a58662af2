//! The HTTP cache in front of the audience reads, the way a reverse-proxy cache sits in
//! front of an application.
//!
//! [`layer`] is the middleware that answers fresh hits and `304 Not Modified` before
//! routing; everything else reaches the handlers, which read through [`AudienceCache`] and
//! so fill it. Both answer with [`layer::respond`]. One entry per (upstream identity,
//! audience id) holds the three public representations ([`entry`]); platform accounts are
//! cached per identity with the same rules ([`store`]: one get-or-fetch, single-flight
//! misses, stale-if-error). Writes through this gateway drop the audience's entry, and a
//! fetch that raced with a write never stores what it read.

mod entry;
pub mod layer;
mod store;

use std::sync::Arc;

use actix_web::http::header::{HeaderMap, HeaderName, HeaderValue, CACHE_CONTROL, VARY};
use bytes::Bytes;

use entry::part_or_problem;
pub use entry::{strong_etag, CachedAudience, Representation};
use store::{FetchError, Stamped, Store, Windows};

use crate::error::ApiError;
use crate::metrics::Metrics;
use crate::settings::CacheSettings;
use crate::telemetry::CallContext;
use crate::upstream::{UpstreamClient, UpstreamError};

/// RFC 9211 `Cache-Status`.
pub const CACHE_STATUS: HeaderName = HeaderName::from_static("cache-status");

/// Which representation of an audience.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum View {
    Audience,
    Insights,
    Uploads,
}

/// How a read was answered, for `Cache-Status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Fresh entry; seconds of freshness left.
    Hit { ttl: u64 },
    /// Fetched because absent or expired.
    Miss { ttl: u64 },
    /// Fetched from the upstream because the caller forced it ([`layer::forces_refresh`]).
    Refreshed { ttl: u64 },
    /// Expired entry served because the upstream failed; seconds past expiry.
    Stale { age_past_ttl: u64 },
    /// Expired entry served at once while a background refresh replaces it
    /// (stale-while-revalidate); seconds past expiry.
    Revalidating { age_past_ttl: u64 },
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
            Outcome::Revalidating { age_past_ttl } => {
                format!("audience-gateway; hit; ttl=-{age_past_ttl}; detail=stale-while-revalidate")
            }
            Outcome::Bypass => "audience-gateway; fwd=bypass".into(),
        }
    }

    /// `Cache-Status` as a header value.
    fn header_value(self) -> HeaderValue {
        // ASCII text this module formats.
        HeaderValue::from_maybe_shared(Bytes::from(self.cache_status()))
            .unwrap_or_else(|_| HeaderValue::from_static("audience-gateway"))
    }
}

/// `Cache-Control` of every cached read, whatever the outcome: a browser or proxy may keep
/// the answer but must revalidate it with the gateway (`If-None-Match`) before each reuse,
/// so a write, a delete or another caller's token is never answered from a copy the gateway
/// did not check. Freshness in the gateway's own cache is told by `Cache-Status`.
pub const READ_CACHE_CONTROL: HeaderValue = HeaderValue::from_static("private, no-cache");

/// `Vary` of every cached read: the answer depends on the caller's token (CORS adds
/// `Origin` when it is configured).
pub const READ_VARY: HeaderValue = HeaderValue::from_static("Authorization");

/// Longest freshness, in seconds, whose hit headers are built in advance.
const HIT_HEADER_TABLE: u64 = 600;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Key {
    identity: Arc<str>,
    id: i64,
}

/// The audience and platform-account cache.
pub struct AudienceCache {
    enabled: bool,
    audiences: Arc<Store<Key, Arc<CachedAudience>>>,
    /// Platform accounts per upstream identity, serialized and tagged.
    accounts: Arc<Store<Arc<str>, Arc<Representation>>>,
    /// `Cache-Status` of a hit, by seconds of freshness left (up to [`HIT_HEADER_TABLE`]),
    /// built once: a hit copies a value instead of formatting.
    hit_headers: Vec<HeaderValue>,
    /// The same for reads with the cache disabled (always the same value).
    bypass_header: HeaderValue,
}

impl AudienceCache {
    /// A cache sized in bytes.
    pub fn new(s: &CacheSettings, metrics: Arc<Metrics>) -> Self {
        let ttl = s.ttl;
        let windows = Windows {
            ttl,
            stale: s.stale,
            revalidate: s.revalidate,
        };
        Self {
            enabled: s.enabled && !ttl.is_zero(),
            audiences: Arc::new(
                Store::new(
                    moka::future::Cache::builder()
                        .max_capacity(s.max_bytes)
                        .weigher(|_k: &Key, v: &Stamped<Arc<CachedAudience>>| v.value.weight()),
                    windows,
                    metrics.clone(),
                )
                .refusing_heavier_than(s.max_bytes, |v| v.weight()),
            ),
            accounts: Arc::new(Store::new(
                moka::future::Cache::builder().max_capacity(64),
                windows,
                metrics,
            )),
            hit_headers: (0..=ttl.as_secs().min(HIT_HEADER_TABLE))
                .map(|ttl| Outcome::Hit { ttl }.header_value())
                .collect(),
            bypass_header: Outcome::Bypass.header_value(),
        }
    }

    /// Sets `Cache-Control`, `Vary` and `Cache-Status` of a cached read answered with
    /// `outcome`.
    pub fn set_headers(&self, outcome: Outcome, headers: &mut HeaderMap) {
        let cache_status = match outcome {
            Outcome::Hit { ttl } => usize::try_from(ttl)
                .ok()
                .and_then(|i| self.hit_headers.get(i))
                .cloned()
                .unwrap_or_else(|| outcome.header_value()),
            Outcome::Bypass => self.bypass_header.clone(),
            _ => outcome.header_value(),
        };
        headers.insert(CACHE_CONTROL, READ_CACHE_CONTROL);
        headers.insert(VARY, READ_VARY);
        headers.insert(CACHE_STATUS, cache_status);
    }

    /// Whether reads go through the cache; when not, every read is a bypass.
    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// A fresh entry for `(identity, id)`, if the cache holds one. Counts a hit; anything
    /// else is left to [`AudienceCache::read`].
    pub async fn fresh(
        &self,
        identity: Arc<str>,
        id: i64,
    ) -> Option<(Arc<CachedAudience>, Outcome)> {
        if !self.enabled {
            return None;
        }
        self.audiences.fresh(&Key { identity, id }).await
    }

    /// Reads an audience through the cache. `refresh` forces an upstream call.
    pub async fn get(
        &self,
        upstream: &Arc<UpstreamClient>,
        ctx: &CallContext,
        id: i64,
        refresh: bool,
    ) -> Result<(Arc<CachedAudience>, Outcome), UpstreamError> {
        let fetch = move |upstream: Arc<UpstreamClient>, ctx: CallContext| async move {
            let record = upstream.load_audience(&ctx, id).await?;
            Ok(Arc::new(CachedAudience::from_record(&record)?))
        };
        if !self.enabled {
            return Ok((fetch(upstream.clone(), ctx.clone()).await?, Outcome::Bypass));
        }
        let key = Key {
            identity: upstream.identity(),
            id,
        };
        let (upstream, ctx) = (upstream.clone(), ctx.clone());
        self.audiences
            .get_or_fetch(key, refresh, move || fetch(upstream, ctx))
            .await
    }

    /// One representation of an audience, through the cache. With the cache disabled only
    /// that representation is built (saving two serializations and two hashes per read), and
    /// a read of the audience itself skips the upload history while decoding.
    pub async fn read(
        &self,
        upstream: &Arc<UpstreamClient>,
        ctx: &CallContext,
        id: i64,
        refresh: bool,
        view: View,
    ) -> Result<(Arc<Representation>, Outcome), ApiError> {
        if !self.enabled {
            let rep = match view {
                View::Audience => Representation::of(&upstream.load_audience_only(ctx, id).await?)?,
                other => {
                    let record = upstream.load_audience(ctx, id).await?;
                    part_or_problem(&Representation::of_view(&record, other)?)?.clone()
                }
            };
            return Ok((rep, Outcome::Bypass));
        }
        let (entry, outcome) = self.get(upstream, ctx, id, refresh).await?;
        Ok((entry.view(view)?.clone(), outcome))
    }

    /// The platform-account list (serialized, without access tokens), cached per identity
    /// with the same freshness, coalescing and stale-if-error rules as audiences. `refresh`
    /// forces an upstream call.
    pub async fn platform_accounts(
        &self,
        upstream: &Arc<UpstreamClient>,
        ctx: &CallContext,
        refresh: bool,
    ) -> Result<(Arc<Representation>, Outcome), UpstreamError> {
        let fetch = |upstream: Arc<UpstreamClient>, ctx: CallContext| async move {
            Representation::of(&crate::domain::PlatformAccountList {
                items: upstream.platform_accounts(&ctx).await?,
            })
        };
        if !self.enabled {
            return Ok((fetch(upstream.clone(), ctx.clone()).await?, Outcome::Bypass));
        }
        let (key, upstream, ctx) = (upstream.identity(), upstream.clone(), ctx.clone());
        self.accounts
            .get_or_fetch(key, refresh, move || fetch(upstream, ctx))
            .await
    }

    /// Drops an audience after a write, so no later read sees the old version.
    pub async fn evict(&self, identity: &Arc<str>, id: i64) {
        let key = Key {
            identity: identity.clone(),
            id,
        };
        self.audiences.invalidate(&key).await;
    }

    /// Drops the platform accounts of `identity` (a purge).
    pub async fn evict_accounts(&self, identity: &Arc<str>) {
        self.accounts.invalidate(identity).await;
    }

    /// Drops every audience and the platform accounts (e.g. after missing invalidation
    /// messages).
    pub fn clear(&self) {
        self.audiences.clear();
        self.accounts.clear();
    }

    /// Audience entries and their weighted size, for tests and diagnostics.
    pub async fn usage(&self) -> (u64, u64) {
        self.audiences.usage().await
    }
}

impl FetchError for UpstreamError {
    fn is_transient(&self) -> bool {
        UpstreamError::is_transient(self)
    }

    fn no_entry() -> Self {
        UpstreamError::Failure("cache fill produced no entry".into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_status_follows_rfc9211() {
        assert_eq!(
            Outcome::Hit { ttl: 12 }.cache_status(),
            "audience-gateway; hit; ttl=12"
        );
        assert_eq!(
            Outcome::Refreshed { ttl: 30 }.cache_status(),
            "audience-gateway; fwd=request; stored; ttl=30"
        );
        assert_eq!(
            Outcome::Stale { age_past_ttl: 3 }.cache_status(),
            "audience-gateway; fwd=stale; ttl=-3; detail=stale-if-error"
        );
    }
}
