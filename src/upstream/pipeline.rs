//! The call pipeline: one pooled HTTP client with the vendor's cookie jar, deadlines, a
//! concurrency bound, the circuit breaker, session renewal and the one retry loop. It never
//! looks at a vendor answer itself: [`wire::read`] says what each answer means, and this
//! acts on that [`Answer`].

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use rand::Rng;
use secrecy::{ExposeSecret, SecretString};
use serde::de::IgnoredAny;
use serde::Serialize;
use sha2::{Digest, Sha256};
use tokio::sync::Semaphore;
use tracing::field::Empty;
use tracing::Instrument;

use super::breaker::{BreakerState, CircuitBreaker};
use super::error::UpstreamError;
use super::session::{Session, VendorCookies};
use super::wire::{self, Answer, Operation, Payload, SESSION_COOKIE};
use crate::metrics::Metrics;
use crate::settings::UpstreamSettings;
use crate::telemetry::{otel, CallContext};

/// Largest upstream body the gateway reads.
const MAX_UPSTREAM_BODY: usize = 16 * 1024 * 1024;
/// Longest wait between two attempts, before jitter.
const MAX_BACKOFF: Duration = Duration::from_secs(2);

/// The Digital Audience API client.
pub struct UpstreamClient {
    http: reqwest::Client,
    base_url: reqwest::Url,
    identity: Arc<str>,
    username: Option<String>,
    password: Option<SecretString>,
    session: Session,
    permits: Semaphore,
    max_concurrency: usize,
    queue_timeout: Duration,
    budget: Duration,
    retries: u32,
    retry_base: Duration,
    breaker: CircuitBreaker,
    metrics: Arc<Metrics>,
}

impl UpstreamClient {
    /// Builds the client; no network traffic happens here.
    pub fn new(
        s: &UpstreamSettings,
        budget: Duration,
        metrics: Arc<Metrics>,
    ) -> anyhow::Result<Self> {
        let base = s.base_url.trim().trim_end_matches('/').to_string();
        let base_url = reqwest::Url::parse(&base)?;
        let cookies = match &s.session_cookie {
            Some(value) => VendorCookies::seeded(
                &format!("{SESSION_COOKIE}={}; Path=/", value.expose_secret()),
                &base_url,
            ),
            None => VendorCookies::default(),
        };
        let http = reqwest::Client::builder()
            .cookie_provider(Arc::new(cookies))
            .connect_timeout(s.connect_timeout)
            .timeout(s.request_timeout)
            .redirect(reqwest::redirect::Policy::none())
            .pool_idle_timeout(Duration::from_secs(60))
            .pool_max_idle_per_host(512)
            .tcp_nodelay(true)
            .user_agent(concat!("audience-gateway/", env!("CARGO_PKG_VERSION")))
            .build()?;
        let who = s.username.clone().unwrap_or_else(|| "cookie".into());
        let digest = Sha256::digest(format!("{base}\n{who}").as_bytes());
        let identity: String = digest[..6].iter().map(|b| format!("{b:02x}")).collect();
        // A session can only be renewed ahead of time by logging in.
        let can_login = s.username.is_some() && s.password.is_some();
        let max_age = s.max_session_age.filter(|_| can_login);
        Ok(Self {
            http,
            base_url,
            identity: identity.into(),
            username: s.username.clone(),
            password: s.password.clone(),
            session: Session::new(s.session_cookie.is_some(), max_age),
            permits: Semaphore::new(s.max_concurrency),
            max_concurrency: s.max_concurrency,
            queue_timeout: s.queue_timeout,
            budget,
            retries: s.retries,
            retry_base: s.retry_base,
            breaker: CircuitBreaker::new(s.breaker_failures, s.breaker_open),
            metrics,
        })
    }

    /// A short, non-secret fingerprint of base URL and account: part of every cache key.
    pub fn identity(&self) -> Arc<str> {
        self.identity.clone()
    }

    /// State of the circuit breaker, for readiness and metrics.
    pub fn breaker_state(&self) -> BreakerState {
        self.breaker.state()
    }

    /// Calls holding a concurrency slot now.
    pub fn in_flight(&self) -> usize {
        self.max_concurrency
            .saturating_sub(self.permits.available_permits())
    }

    /// One vendor call with deadline, breaker, concurrency bound, session renewal and retries.
    /// A failure that is the vendor's (not a refusal, not a missing entity) is logged here
    /// with the operation and its reason; the request id is on the line already.
    pub(super) async fn call<T: Payload, B: Serialize>(
        &self,
        ctx: &CallContext,
        op: Operation,
        id: Option<i64>,
        body: Option<&B>,
    ) -> Result<Option<T>, UpstreamError> {
        let started = Instant::now();
        let body = match body.map(serde_json::to_vec).transpose() {
            Ok(b) => b,
            Err(e) => return Err(UpstreamError::Failure(format!("encode body: {e}"))),
        };
        // Boxed: the call's state (retries, session, reqwest) is large, and every future
        // that awaits it would otherwise carry and move it.
        let guarded = Box::pin(self.guarded(ctx, op, id, body.as_deref()));
        let result = match tokio::time::timeout(self.budget, guarded).await {
            Ok(r) => r,
            Err(_) => Err(UpstreamError::Timeout),
        };
        let outcome = match &result {
            Ok(_) => "ok",
            Err(e) => e.outcome(),
        };
        match &result {
            Err(e @ (UpstreamError::NotFound(_) | UpstreamError::Rejected(_))) => {
                tracing::info!(op = op.name(), error = %e, "Digital Audience API refused the call");
            }
            Err(e) => {
                tracing::warn!(op = op.name(), outcome, error = %e, "Digital Audience API call failed");
            }
            Ok(_) => {}
        }
        self.metrics
            .upstream_call(op.name(), outcome, started.elapsed());
        result
    }

    async fn guarded<T: Payload>(
        &self,
        ctx: &CallContext,
        op: Operation,
        id: Option<i64>,
        body: Option<&[u8]>,
    ) -> Result<Option<T>, UpstreamError> {
        let probe = self.breaker.admit().map_err(|wait| {
            tracing::info!(
                target: otel::TARGET,
                op = op.name(),
                retry_after_ms = wait.as_millis() as u64,
                "circuit open: call refused"
            );
            UpstreamError::Unavailable("circuit open".into(), Some(wait))
        })?;
        if probe {
            tracing::info!(target: otel::TARGET, op = op.name(), "circuit half-open: probe call");
        }
        // A free permit needs no timer; only a caller that has to queue gets a deadline.
        let permit = match self.permits.try_acquire() {
            Ok(permit) => permit,
            Err(_) => {
                let _waiting = self.metrics.waiting_for_slot();
                tokio::time::timeout(self.queue_timeout, self.permits.acquire())
                    .await
                    .map_err(|_| {
                        UpstreamError::Unavailable(
                            "too many upstream calls in flight".into(),
                            Some(Duration::from_secs(1)),
                        )
                    })?
                    .map_err(|_| UpstreamError::Unavailable("client closed".into(), None))?
            }
        };
        // Only a call that may be repeated, or one that never reached the vendor, is retried.
        let result = self
            .retrying(
                op,
                || self.with_session(ctx, op, id, body),
                |e, sent| (op.is_safe() || !sent) && e.is_outage(),
            )
            .await;
        drop(permit);
        let healthy = result.as_ref().map_or_else(|e| !e.is_outage(), |_| true);
        match self.breaker.record(healthy, probe) {
            Some(BreakerState::Open) => {
                tracing::warn!(op = op.name(), "upstream circuit breaker opened");
            }
            Some(BreakerState::Closed) => {
                tracing::info!(op = op.name(), "upstream circuit breaker closed");
            }
            Some(BreakerState::HalfOpen) | None => {}
        }
        result
    }

    /// The one retry loop, for calls and logins: up to `retries` more attempts while
    /// `retryable(error, sent)` holds, waiting [`backoff`] between them. Each attempt is a
    /// client span (operation, attempt number, HTTP status, outcome, and the back-off that
    /// follows it), the parent of the vendor's side of the call.
    async fn retrying<T, F, Fut>(
        &self,
        op: Operation,
        mut attempt: F,
        retryable: impl Fn(&UpstreamError, bool) -> bool,
    ) -> Result<T, UpstreamError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, Attempt>>,
    {
        let mut done = 0;
        loop {
            let span = tracing::info_span!(
                target: otel::TARGET,
                "upstream call",
                otel.name = op.name(),
                otel.kind = "client",
                otel.status_code = Empty,
                http.request.method = op.method().as_str(),
                http.response.status_code = Empty,
                audience_gateway.operation = op.name(),
                audience_gateway.attempt = done + 1,
                audience_gateway.outcome = Empty,
                audience_gateway.backoff_ms = Empty,
            );
            let result = attempt().instrument(span.clone()).await;
            let outcome = result.as_ref().map_or_else(|a| a.error.outcome(), |_| "ok");
            span.record("audience_gateway.outcome", outcome);
            match result {
                Ok(v) => return Ok(v),
                Err(Attempt { error, sent }) if done < self.retries && retryable(&error, sent) => {
                    done += 1;
                    let wait = backoff(self.retry_base, done);
                    span.record("otel.status_code", "error");
                    span.record("audience_gateway.backoff_ms", wait.as_millis() as u64);
                    drop(span);
                    tracing::debug!(op = op.name(), attempt = done, error = %error, "retrying upstream call");
                    tokio::time::sleep(wait).await;
                }
                Err(Attempt { error, .. }) => {
                    if error.is_outage() {
                        span.record("otel.status_code", "error");
                    }
                    return Err(error);
                }
            }
        }
    }

    /// Sends with the current session; on an expired-session answer renews once and resends.
    async fn with_session<T: Payload>(
        &self,
        ctx: &CallContext,
        op: Operation,
        id: Option<i64>,
        body: Option<&[u8]>,
    ) -> Result<Option<T>, Attempt> {
        let mut generation = match self.session.current().await {
            Ok(g) => g,
            Err(stale) => self.renew(ctx, stale).await.map_err(Attempt::unsent)?,
        };
        for renewed in [false, true] {
            match self.send(ctx, op, id, body).await? {
                Answer::SessionExpired if !renewed => {
                    tracing::info!(op = op.name(), "upstream session expired; logging in again");
                    generation = self.renew(ctx, generation).await.map_err(Attempt::sent)?;
                }
                Answer::SessionExpired => {}
                answer => return settle(answer).map_err(Attempt::sent),
            }
        }
        Err(Attempt::sent(UpstreamError::LoginFailed(
            "session rejected right after login".into(),
        )))
    }

    async fn renew(&self, ctx: &CallContext, stale: u64) -> Result<u64, UpstreamError> {
        self.session.renew(stale, || self.login(ctx)).await
    }

    /// `POST /account/login`, which fills the jar. A span of its own, the parent of its
    /// attempts.
    async fn login(&self, ctx: &CallContext) -> Result<(), UpstreamError> {
        let span = tracing::info_span!(
            target: otel::TARGET,
            "upstream login",
            otel.name = "session login",
            otel.status_code = Empty,
        );
        let result = self.login_attempts(ctx).instrument(span.clone()).await;
        if result.is_err() {
            span.record("otel.status_code", "error");
        }
        result
    }

    async fn login_attempts(&self, ctx: &CallContext) -> Result<(), UpstreamError> {
        let (Some(user), Some(password)) = (&self.username, &self.password) else {
            self.metrics.login(false);
            return Err(UpstreamError::LoginFailed(
                "the configured session cookie was rejected and no service account is configured"
                    .into(),
            ));
        };
        let body = serde_json::to_vec(&wire::LoginBody {
            user_name: user,
            password: password.expose_secret(),
        })
        .map_err(|e| UpstreamError::Failure(e.to_string()))?;
        let started = Instant::now();
        let result = self
            .retrying(
                Operation::Login,
                || self.try_login(ctx, &body),
                |e, _| e.is_outage(),
            )
            .await;
        let outcome = result
            .as_ref()
            .map_or_else(UpstreamError::outcome, |_| "ok");
        self.metrics.login(result.is_ok());
        self.metrics
            .upstream_call(Operation::Login.name(), outcome, started.elapsed());
        result.map_err(|e| {
            tracing::warn!(op = Operation::Login.name(), error = %e, "upstream login failed");
            match e {
                e @ (UpstreamError::Timeout | UpstreamError::Unavailable(..)) => e,
                UpstreamError::LoginFailed(why) => UpstreamError::LoginFailed(why),
                other => UpstreamError::LoginFailed(other.to_string()),
            }
        })
    }

    /// One login attempt, read by [`wire::read`]'s login rules.
    async fn try_login(&self, ctx: &CallContext, body: &[u8]) -> Result<(), Attempt> {
        let refused = |why: String| Attempt::sent(UpstreamError::LoginFailed(why));
        match self
            .send::<IgnoredAny>(ctx, Operation::Login, None, Some(body))
            .await?
        {
            Answer::Payload(_) | Answer::Done => Ok(()),
            Answer::Refused(r) => Err(refused(r.message)),
            Answer::Unreadable(why) => Err(refused(format!("login answer unreadable: {why}"))),
            Answer::NotFound(why) => Err(refused(why)),
            Answer::SessionExpired => Err(refused("login answered as an expired session".into())),
            answer => settle(answer).map(drop).map_err(Attempt::sent),
        }
    }

    fn request(
        &self,
        ctx: &CallContext,
        op: Operation,
        id: Option<i64>,
        body: Option<&[u8]>,
    ) -> reqwest::RequestBuilder {
        // The parsed base with the path replaced: no URL (host, IDNA) parsing per call.
        let mut url = self.base_url.clone();
        url.set_path(&format!(
            "{}{}",
            self.base_url.path().trim_end_matches('/'),
            op.path(id)
        ));
        let mut req = self
            .http
            .request(op.method(), url)
            .header("accept", "application/json")
            .header("x-request-id", &ctx.request_id);
        // The attempt's span is the vendor's parent when the gateway traces; otherwise the
        // caller's context passes through.
        let traced = otel::trace_headers(&tracing::Span::current());
        if traced.is_empty() {
            if let Some(tp) = &ctx.traceparent {
                req = req.header("traceparent", tp);
            }
        }
        for (name, value) in traced {
            req = req.header(name, value);
        }
        if let Some(b) = body {
            req = req
                .header("content-type", "application/json")
                .body(b.to_vec());
        }
        req
    }

    /// One HTTP exchange (the jar adds and keeps the vendor's cookies), and what its answer
    /// means ([`wire::read`]).
    async fn send<T: Payload>(
        &self,
        ctx: &CallContext,
        op: Operation,
        id: Option<i64>,
        body: Option<&[u8]>,
    ) -> Result<Answer<T>, Attempt> {
        let resp = self
            .request(ctx, op, id, body)
            .send()
            .await
            .map_err(|e| Attempt::from_transport(&e))?;
        let status = resp.status();
        tracing::Span::current().record("http.response.status_code", status.as_u16());
        let headers = resp.headers().clone();
        let bytes = read_body(resp).await.map_err(Attempt::sent)?;
        Ok(wire::read(op, status, &headers, &bytes))
    }
}

/// A failed attempt, and whether the request may have reached the upstream.
struct Attempt {
    error: UpstreamError,
    sent: bool,
}

impl Attempt {
    fn sent(error: UpstreamError) -> Self {
        Attempt { error, sent: true }
    }

    fn unsent(error: UpstreamError) -> Self {
        Attempt { error, sent: false }
    }

    fn from_transport(e: &reqwest::Error) -> Self {
        Attempt {
            error: transport_error(e),
            sent: !e.is_connect(),
        }
    }
}

/// Delay before retry number `attempt` (from 1): `base` doubled per attempt, capped at
/// [`MAX_BACKOFF`], plus up to as much again of random jitter so that replicas retrying
/// together spread out.
pub fn backoff(base: Duration, attempt: u32) -> Duration {
    let exp = base
        .saturating_mul(1u32 << attempt.saturating_sub(1).min(16))
        .min(MAX_BACKOFF);
    let jitter = rand::rng().random_range(0..=exp.as_millis() as u64);
    exp + Duration::from_millis(jitter)
}

/// What the call returns for an answer other than an expired session: its payload,
/// `None` for a success without one, or the error.
pub(super) fn settle<T>(answer: Answer<T>) -> Result<Option<T>, UpstreamError> {
    match answer {
        Answer::Payload(v) => Ok(Some(v)),
        Answer::Done => Ok(None),
        Answer::NotFound(why) => Err(UpstreamError::NotFound(why)),
        Answer::Refused(r) => Err(UpstreamError::Rejected(r)),
        Answer::SessionExpired => Err(UpstreamError::LoginFailed(
            "session rejected right after login".into(),
        )),
        Answer::Unavailable {
            reason,
            retry_after,
        } => Err(UpstreamError::Unavailable(
            reason,
            retry_after.map(|r| r.wait(SystemTime::now())),
        )),
        Answer::Failure(why) => Err(UpstreamError::Failure(why)),
        Answer::Unreadable(why) => Err(UpstreamError::Unreadable(why)),
    }
}

fn transport_error(e: &reqwest::Error) -> UpstreamError {
    if e.is_timeout() {
        UpstreamError::Timeout
    } else if e.is_connect() {
        UpstreamError::Unavailable("connection failed".into(), None)
    } else {
        // Only the category: reqwest's text would carry the URL.
        let what = if e.is_body() || e.is_decode() {
            "reading the response failed"
        } else {
            "the request failed"
        };
        UpstreamError::Failure(format!("transport: {what}"))
    }
}

async fn read_body(mut resp: reqwest::Response) -> Result<bytes::Bytes, UpstreamError> {
    if resp
        .content_length()
        .is_some_and(|l| l as usize > MAX_UPSTREAM_BODY)
    {
        return Err(UpstreamError::Failure("upstream body too large".into()));
    }
    // A body that arrives in one chunk (the usual case) is returned as it is, uncopied.
    let mut only: Option<bytes::Bytes> = None;
    let mut buf = bytes::BytesMut::new();
    loop {
        match resp.chunk().await {
            Ok(Some(chunk)) => {
                let held = only.as_ref().map_or(0, bytes::Bytes::len) + buf.len();
                if held + chunk.len() > MAX_UPSTREAM_BODY {
                    return Err(UpstreamError::Failure("upstream body too large".into()));
                }
                if buf.is_empty() && only.is_none() {
                    only = Some(chunk);
                    continue;
                }
                if let Some(first) = only.take() {
                    buf.extend_from_slice(&first);
                }
                buf.extend_from_slice(&chunk);
            }
            Ok(None) => return Ok(only.unwrap_or_else(|| buf.freeze())),
            Err(e) if e.is_timeout() => return Err(UpstreamError::Timeout),
            Err(_) => return Err(UpstreamError::Failure("upstream body truncated".into())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_is_capped_and_never_overflows() {
        let base = Duration::from_millis(50);
        let within = |attempt, low: u64| {
            let d = backoff(base, attempt);
            let low = Duration::from_millis(low);
            assert!(d >= low && d <= low * 2, "attempt {attempt}: {d:?}");
        };
        within(1, 50);
        within(2, 100);
        within(3, 200);
        within(33, 2_000);
        within(u32::MAX, 2_000);
    }
}
