//! The one get-or-fetch of the cache, for audiences and platform accounts alike: fresh
//! values are served as they are; concurrent misses for one key make one upstream call
//! (moka's per-key compute lock), and so do concurrent forced refreshes (a refresh that
//! waited for the lock takes a value fetched after it was asked); a fetch that raced with an
//! invalidation never stores what it read; an expired value stays usable for the stale window when the upstream fails
//! (stale-if-error); a value heavier than the whole capacity is answered but never stored.
//! Within the revalidate window after expiry, a value is answered at once while one
//! background refresh per key replaces it (stale-while-revalidate, [`Store::revalidating`]
//! and [`Store::revalidate_in_background`]).

use std::collections::HashSet;
use std::future::Future;
use std::hash::Hash;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use moka::ops::compute::Op;
use tracing::Instrument;

use super::Outcome;
use crate::metrics::Metrics;
use crate::telemetry::otel;

/// What the store needs to know of a fetch's error.
pub(super) trait FetchError: std::fmt::Display + Send + Sync + 'static {
    /// Whether a stale copy may stand in for the answer (stale-if-error).
    fn is_transient(&self) -> bool;
    /// The error of a fill that produced no entry.
    fn no_entry() -> Self;
}

/// A value and when it was fetched.
#[derive(Clone)]
pub(super) struct Stamped<V> {
    pub value: V,
    fetched: Instant,
}

/// The weight of a value, as the cache's capacity counts it.
type Weigher<V> = fn(&V) -> u32;

/// Who a fetch answers: a caller, who gets the expired copy when the upstream fails
/// (stale-if-error), or the background refresh, whose failure leaves that copy in place.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Asker {
    Caller,
    Background,
}

/// Freshness and the windows after it, for [`Store::new`].
#[derive(Debug, Clone, Copy)]
pub(super) struct Windows {
    /// How long a value is fresh.
    pub ttl: Duration,
    /// How long after expiry it stands in for a failing upstream.
    pub stale: Duration,
    /// How long after expiry it is answered while a background refresh runs (0: never).
    pub revalidate: Duration,
}

/// Keyed values with freshness and stale windows.
pub(super) struct Store<K, V> {
    entries: moka::future::Cache<K, Stamped<V>>,
    ttl: Duration,
    stale: Duration,
    revalidate: Duration,
    /// Keys whose background refresh is under way.
    refreshing: Mutex<HashSet<K>>,
    /// Bumped by every invalidation; a fetch that saw another value does not store.
    epoch: AtomicU64,
    metrics: Arc<Metrics>,
    /// The capacity and the weigher, when the builder weighs values.
    bound: Option<(u64, Weigher<V>)>,
}

impl<K, V> Store<K, V>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
{
    /// A store over `builder` (which sets the capacity and weigher); values are fresh for
    /// `ttl` and live as long as either window after it.
    pub fn new(
        builder: moka::future::CacheBuilder<K, Stamped<V>, moka::future::Cache<K, Stamped<V>>>,
        windows: Windows,
        metrics: Arc<Metrics>,
    ) -> Self {
        let Windows {
            ttl,
            stale,
            revalidate,
        } = windows;
        Self {
            entries: builder
                .time_to_live((ttl + stale.max(revalidate)).max(Duration::from_secs(1)))
                .build(),
            ttl,
            stale,
            revalidate,
            refreshing: Mutex::new(HashSet::new()),
            epoch: AtomicU64::new(0),
            metrics,
            bound: None,
        }
    }

    /// Never stores a value `weigh` finds heavier than `capacity` (the builder's weigher and
    /// capacity): moka would hold it until its next clean-up.
    pub fn refusing_heavier_than(mut self, capacity: u64, weigh: Weigher<V>) -> Self {
        self.bound = Some((capacity, weigh));
        self
    }

    /// Whether `value` may be stored at all.
    fn fits(&self, value: &V) -> bool {
        self.bound
            .is_none_or(|(capacity, weigh)| u64::from(weigh(value)) <= capacity)
    }

    /// Whole seconds of freshness left for something fetched at `fetched` (None: expired).
    fn fresh_for(&self, fetched: Instant) -> Option<u64> {
        self.ttl
            .checked_sub(fetched.elapsed())
            .filter(|d| !d.is_zero())
            .map(|d| d.as_secs().max(1))
    }

    /// A hit on `stamped` if it is still fresh; counts it.
    fn hit(&self, stamped: &Stamped<V>) -> Option<(V, Outcome)> {
        let ttl = self.fresh_for(stamped.fetched)?;
        self.metrics.cache("hit");
        Some((stamped.value.clone(), Outcome::Hit { ttl }))
    }

    /// The value for `key` if it is fresh: the read that needs no upstream call, no lock and
    /// no waiting.
    pub async fn fresh(&self, key: &K) -> Option<(V, Outcome)> {
        self.hit(&self.entries.get(key).await?)
    }

    /// The value for `key` if it expired less than the revalidate window ago: answered at
    /// once (counted as `revalidate`) while [`Store::revalidate_in_background`] replaces it.
    async fn revalidating(&self, key: &K) -> Option<(V, Outcome)> {
        if self.revalidate.is_zero() {
            return None;
        }
        let stamped = self.entries.get(key).await?;
        let age = stamped.fetched.elapsed();
        if age < self.ttl || age >= self.ttl + self.revalidate {
            return None;
        }
        self.metrics.cache("revalidate");
        let past = age.saturating_sub(self.ttl).as_secs();
        Some((stamped.value, Outcome::Revalidating { age_past_ttl: past }))
    }

    /// Starts the one background refresh of `key` unless one is under way: `fetch` through
    /// [`Store::get_or_fetch`] as a forced refresh (so it shares a caller's forced refresh
    /// and never stores what raced with an invalidation), in a span of its own under the
    /// current one. A failure leaves the expired value for stale-if-error.
    fn revalidate_in_background<F, Fut, E>(self: &Arc<Self>, key: K, fetch: F)
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = Result<V, E>> + Send + 'static,
        E: FetchError,
    {
        let first = self
            .refreshing
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(key.clone());
        if !first {
            return;
        }
        let store = Arc::clone(self);
        let span = tracing::info_span!(target: otel::TARGET, "cache.revalidate");
        tokio::spawn(
            async move {
                let refreshed = store
                    .fetch_through(key.clone(), true, Asker::Background, fetch)
                    .await;
                if let Err(e) = refreshed {
                    tracing::warn!(error = %e, "background revalidation failed");
                }
                store
                    .refreshing
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .remove(&key);
            }
            .instrument(span),
        );
    }

    /// The value for `key`: fresh from the store unless `refresh`; else, within the
    /// revalidate window, the expired value at once while `fetch` runs in the background;
    /// else [`Store::fetch_through`].
    pub async fn get_or_fetch<F, Fut, E>(
        self: &Arc<Self>,
        key: K,
        refresh: bool,
        fetch: F,
    ) -> Result<(V, Outcome), E>
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = Result<V, E>> + Send + 'static,
        E: FetchError,
    {
        if !refresh {
            if let Some(stale) = self.revalidating(&key).await {
                self.revalidate_in_background(key, fetch);
                return Ok(stale);
            }
        }
        self.fetch_through(key, refresh, Asker::Caller, fetch).await
    }

    /// The value for `key`: fresh from the store unless `refresh`, else fetched by `fetch`
    /// (once for all concurrent callers) and stored, else, when the upstream fails
    /// transiently and a caller asks, the expired copy while within the stale window.
    async fn fetch_through<F, Fut, E>(
        &self,
        key: K,
        refresh: bool,
        asker: Asker,
        fetch: F,
    ) -> Result<(V, Outcome), E>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<V, E>>,
        E: FetchError,
    {
        let asked = Instant::now();
        let existing = self.entries.get(&key).await;
        if !refresh {
            if let Some(hit) = existing.as_ref().and_then(|e| self.hit(e)) {
                return Ok(hit);
            }
        }
        let mut fetched_now = None;
        let slot = &mut fetched_now;
        let result = self
            .entries
            .entry(key)
            .and_try_compute_with(move |current| async move {
                // Someone else fetched it while we waited for the key lock: a fresh entry
                // answers a read; one fetched since this refresh was asked answers a refresh
                // (concurrent refreshes share one upstream call).
                if current.is_some_and(|e| {
                    let fetched = e.value().fetched;
                    if refresh {
                        fetched >= asked
                    } else {
                        self.fresh_for(fetched).is_some()
                    }
                }) {
                    return Ok(Op::Nop);
                }
                let epoch = self.epoch.load(Ordering::Acquire);
                let stamped = Stamped {
                    value: fetch().await?,
                    fetched: Instant::now(),
                };
                *slot = Some(stamped.value.clone());
                let unchanged = self.epoch.load(Ordering::Acquire) == epoch;
                Ok::<_, E>(if unchanged && self.fits(&stamped.value) {
                    Op::Put(stamped)
                } else {
                    Op::Nop
                })
            })
            .await;
        match (result, fetched_now) {
            (Ok(_), Some(value)) => {
                self.metrics.cache("miss");
                let ttl = self.ttl.as_secs();
                let outcome = if refresh {
                    Outcome::Refreshed { ttl }
                } else {
                    Outcome::Miss { ttl }
                };
                Ok((value, outcome))
            }
            // Another caller's fetch, finished while this one waited for the key lock.
            (Ok(r), None) => match r.into_entry() {
                Some(e) => {
                    let stamped = e.into_value();
                    self.metrics.cache("hit");
                    let ttl = self.fresh_for(stamped.fetched).unwrap_or(0);
                    let outcome = if refresh {
                        Outcome::Refreshed { ttl }
                    } else {
                        Outcome::Hit { ttl }
                    };
                    Ok((stamped.value, outcome))
                }
                None => Err(E::no_entry()),
            },
            (Err(err), _) if asker == Asker::Background => Err(err),
            (Err(err), _) => self.stale_if_error(err, existing),
        }
    }

    /// Stale-if-error: a transient upstream failure is answered with `existing` while it is
    /// within the stale window; anything else stays an error.
    fn stale_if_error<E: FetchError>(
        &self,
        err: E,
        existing: Option<Stamped<V>>,
    ) -> Result<(V, Outcome), E> {
        match existing {
            Some(s) if err.is_transient() && s.fetched.elapsed() < self.ttl + self.stale => {
                tracing::warn!(error = %err, "upstream failed; serving a stale copy");
                self.metrics.cache("stale");
                let past = s.fetched.elapsed().saturating_sub(self.ttl).as_secs();
                Ok((s.value, Outcome::Stale { age_past_ttl: past }))
            }
            _ => Err(err),
        }
    }

    /// Drops `key`; a fetch under way does not store what it read.
    pub async fn invalidate(&self, key: &K) {
        self.epoch.fetch_add(1, Ordering::AcqRel);
        self.entries.invalidate(key).await;
    }

    /// Drops everything.
    pub fn clear(&self) {
        self.epoch.fetch_add(1, Ordering::AcqRel);
        self.entries.invalidate_all();
    }

    /// Entries and weighted size.
    pub async fn usage(&self) -> (u64, u64) {
        self.entries.run_pending_tasks().await;
        (self.entries.entry_count(), self.entries.weighted_size())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::upstream::UpstreamError;

    fn store(capacity: u64) -> Arc<Store<u32, Vec<u8>>> {
        let weigh = |v: &Vec<u8>| u32::try_from(v.len()).unwrap_or(u32::MAX);
        Store::new(
            moka::future::Cache::builder()
                .max_capacity(capacity)
                .weigher(move |_k: &u32, v: &Stamped<Vec<u8>>| weigh(&v.value)),
            Windows {
                ttl: Duration::from_secs(60),
                stale: Duration::ZERO,
                revalidate: Duration::ZERO,
            },
            Arc::new(Metrics::new()),
        )
        .refusing_heavier_than(capacity, weigh)
        .into()
    }

    #[tokio::test]
    async fn a_value_heavier_than_the_capacity_is_answered_but_never_stored() {
        let s = store(10);
        let fetch = |n: usize| move || async move { Ok::<_, UpstreamError>(vec![0u8; n]) };
        let (value, outcome) = s.get_or_fetch(1, false, fetch(11)).await.unwrap();
        assert_eq!((value.len(), outcome), (11, Outcome::Miss { ttl: 60 }));
        assert!(s.fresh(&1).await.is_none(), "not stored");
        s.get_or_fetch(2, false, fetch(10)).await.unwrap();
        assert!(s.fresh(&2).await.is_some(), "a value that fits is stored");
    }
}
