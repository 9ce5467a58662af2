//! The Digital Audience API client: one pooled HTTP client, the session cookie, deadlines,
//! safe retries, bounded concurrency and a circuit breaker. The vendor's wire format lives
//! in [`api`]; nothing else in the gateway knows it. How each vendor answer is read, and
//! what the gateway does when the vendor does not answer as assumed, is in
//! docs/UPSTREAM.md.

pub mod api;
mod breaker;
mod session;

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::Rng;
use reqwest::header::{HeaderMap, CONTENT_TYPE, COOKIE, RETRY_AFTER, SET_COOKIE};
use secrecy::{ExposeSecret, SecretString};
use serde::de::IgnoredAny;
use serde::Serialize;
use sha2::{Digest, Sha256};
use tokio::sync::Semaphore;
use tracing::field::Empty;
use tracing::Instrument;

use crate::domain::{
    Activation, Audience, AudiencePatch, Campaign, NewActivation, NewAudience, PlatformAccount,
};
use crate::error::ApiError;
use crate::metrics::Metrics;
use crate::settings::UpstreamSettings;
use crate::telemetry::{otel, CallContext};
use api::{AudienceDto, Decoded, Operation, Payload, Refusal};
pub use breaker::BreakerState;
use breaker::CircuitBreaker;
use session::{Session, SessionCookie};

/// Largest upstream body the gateway reads.
const MAX_UPSTREAM_BODY: usize = 16 * 1024 * 1024;
/// Longest wait between two attempts, before jitter.
const MAX_BACKOFF: Duration = Duration::from_secs(2);

/// Why an upstream call failed. `Display` never contains secrets or vendor bodies, only
/// statuses, our own words and the sanitised message of a refusal.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("upstream did not answer within the deadline")]
    Timeout,
    #[error("upstream unavailable: {0}")]
    Unavailable(String, Option<Duration>),
    /// The vendor failed: a 5xx, a transport error, or an envelope reporting a failure that
    /// is not the caller's.
    #[error("upstream failed: {0}")]
    Failure(String),
    /// A 2xx answer that cannot be read. For a write, the write may have happened.
    #[error("upstream answer unreadable: {0}")]
    Unreadable(String),
    #[error("not found upstream: {0}")]
    NotFound(String),
    /// The vendor refused the request (HTTP 400/404/409/422, or an envelope 4xx).
    #[error("upstream rejected the request: {}", .0.message)]
    Rejected(Refusal),
    #[error("upstream login failed: {0}")]
    LoginFailed(String),
}

impl UpstreamError {
    /// Whether a cached copy may stand in for the answer (stale-if-error).
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            UpstreamError::Timeout
                | UpstreamError::Unavailable(..)
                | UpstreamError::Failure(_)
                | UpstreamError::Unreadable(_)
                | UpstreamError::LoginFailed(_)
        )
    }

    /// Whether it counts against the circuit breaker and may be retried: the vendor is down
    /// or failing. A refusal or an answer we cannot read says the vendor is up.
    fn is_outage(&self) -> bool {
        matches!(
            self,
            UpstreamError::Timeout | UpstreamError::Unavailable(..) | UpstreamError::Failure(_)
        )
    }

    fn outcome(&self) -> &'static str {
        match self {
            UpstreamError::Timeout => "timeout",
            UpstreamError::Unavailable(..) => "unavailable",
            UpstreamError::Failure(_) => "error",
            UpstreamError::Unreadable(_) => "unreadable",
            UpstreamError::NotFound(_) => "not_found",
            UpstreamError::Rejected(_) => "rejected",
            UpstreamError::LoginFailed(_) => "login_failed",
        }
    }
}

impl From<UpstreamError> for ApiError {
    fn from(e: UpstreamError) -> Self {
        match e {
            UpstreamError::Timeout => ApiError::UpstreamTimeout,
            UpstreamError::Unavailable(_, retry_after) => {
                ApiError::UpstreamUnavailable { retry_after }
            }
            UpstreamError::Failure(_) | UpstreamError::LoginFailed(_) => ApiError::UpstreamFailure,
            UpstreamError::Unreadable(_) => ApiError::UpstreamResponseUnreadable,
            UpstreamError::NotFound(what) => ApiError::NotFound { what },
            UpstreamError::Rejected(r) => ApiError::UpstreamRejected {
                message: r.message,
                field: r.field,
            },
        }
    }
}

/// Result of one HTTP exchange.
enum Exchange<T> {
    /// The vendor answered; the call's result.
    Answer(Result<T, UpstreamError>),
    /// The session was not accepted: renew it and send again.
    SessionExpired,
}

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
        let http = reqwest::Client::builder()
            .connect_timeout(s.connect_timeout)
            .timeout(s.request_timeout)
            .redirect(reqwest::redirect::Policy::none())
            .pool_idle_timeout(Duration::from_secs(60))
            .pool_max_idle_per_host(512)
            .tcp_nodelay(true)
            .user_agent(concat!("audience-gateway/", env!("CARGO_PKG_VERSION")))
            .build()?;
        let base = s.base_url.trim().trim_end_matches('/').to_string();
        let who = s.username.clone().unwrap_or_else(|| "cookie".into());
        let digest = Sha256::digest(format!("{base}\n{who}").as_bytes());
        let identity: String = digest[..6].iter().map(|b| format!("{b:02x}")).collect();
        // A session can only be renewed ahead of time by logging in.
        let can_login = s.username.is_some() && s.password.is_some();
        let max_age = s.max_session_age.filter(|_| can_login);
        Ok(Self {
            http,
            base_url: reqwest::Url::parse(&base)?,
            identity: identity.into(),
            username: s.username.clone(),
            password: s.password.clone(),
            session: Session::new(s.session_cookie.clone(), max_age),
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

    /// `GET` an audience with its CRM data.
    pub async fn load_audience<C: serde::de::DeserializeOwned>(
        &self,
        ctx: &CallContext,
        id: i64,
    ) -> Result<AudienceDto<C>, UpstreamError> {
        self.call(ctx, Operation::LoadAudience, Some(id), None::<&()>)
            .await
            .map_err(|e| not_found_as(e, format!("audience {id}")))
    }

    /// Creates a CRM audience.
    pub async fn create_audience(
        &self,
        ctx: &CallContext,
        a: &NewAudience,
    ) -> Result<AudienceDto, UpstreamError> {
        let body = api::CreateAudienceBody {
            name: &a.name,
            description: a.description.as_deref(),
            campaign_id: a.campaign_id,
        };
        self.call(ctx, Operation::CreateAudience, None, Some(&body))
            .await
            .map_err(refused_if_not_found)
    }

    /// Updates name and description; `name` must be the full new name. Returns the
    /// audience when the vendor's answer carried one (its page shows no update answer).
    pub async fn update_audience(
        &self,
        ctx: &CallContext,
        id: i64,
        name: &str,
        patch: &AudiencePatch,
    ) -> Result<Option<Audience>, UpstreamError> {
        let body = api::UpdateAudienceBody {
            id,
            name,
            description: patch.description.as_deref(),
        };
        self.call::<api::UpdateAnswer, _>(ctx, Operation::UpdateAudience, None, Some(&body))
            .await
            .map(|answer| answer.0.map(AudienceDto::into_audience))
            .map_err(|e| not_found_as(e, format!("audience {id}")))
    }

    /// Deletes an audience. Success is the envelope's and the HTTP status's; `data` is not
    /// read.
    pub async fn delete_audience(&self, ctx: &CallContext, id: i64) -> Result<(), UpstreamError> {
        self.call::<IgnoredAny, _>(
            ctx,
            Operation::DeleteAudience,
            None,
            Some(&api::DeleteAudienceBody { id }),
        )
        .await
        .map(drop)
        .map_err(|e| not_found_as(e, format!("audience {id}")))
    }

    /// Activates an audience on a platform account.
    pub async fn activate(
        &self,
        ctx: &CallContext,
        id: i64,
        a: &NewActivation,
    ) -> Result<Activation, UpstreamError> {
        let body = api::ActivateBody {
            audience_id: id,
            account_id: a.account_id,
            name: &a.name,
            description: &a.description,
            start_date: &a.start_date,
            end_date: &a.end_date,
        };
        self.call::<api::ActivationDto, _>(ctx, Operation::ActivateAudience, None, Some(&body))
            .await
            .map(|d| d.into_activation(id, a.account_id))
            .map_err(|e| not_found_as(e, format!("audience {id}")))
    }

    /// Creates a campaign.
    pub async fn create_campaign(
        &self,
        ctx: &CallContext,
        name: &str,
    ) -> Result<Campaign, UpstreamError> {
        self.call::<api::CampaignDto, _>(
            ctx,
            Operation::CreateCampaign,
            None,
            Some(&api::CreateCampaignBody { name }),
        )
        .await
        .map(Into::into)
        .map_err(refused_if_not_found)
    }

    /// Lists platform accounts, without their access tokens.
    pub async fn platform_accounts(
        &self,
        ctx: &CallContext,
    ) -> Result<Vec<PlatformAccount>, UpstreamError> {
        self.call::<api::PlatformAccounts, _>(
            ctx,
            Operation::LoadPlatformAccounts,
            None,
            None::<&()>,
        )
        .await
        .map(|list| list.0.into_iter().map(Into::into).collect())
    }

    /// One vendor call with deadline, breaker, concurrency bound, session renewal and retries.
    /// A failure that is the vendor's (not a refusal, not a missing entity) is logged here
    /// with the operation and its reason; the request id is on the line already.
    async fn call<T: Payload, B: Serialize>(
        &self,
        ctx: &CallContext,
        op: Operation,
        id: Option<i64>,
        body: Option<&B>,
    ) -> Result<T, UpstreamError> {
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
    ) -> Result<T, UpstreamError> {
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
    ) -> Result<T, Attempt> {
        let mut cookie = match self.session.current().await {
            Ok(c) => c,
            Err(stale) => self.renew(ctx, stale).await.map_err(Attempt::unsent)?,
        };
        for renewed in [false, true] {
            match self.send(ctx, op, id, body, &cookie).await? {
                Exchange::Answer(result) => return result.map_err(Attempt::sent),
                Exchange::SessionExpired if !renewed => {
                    tracing::info!(op = op.name(), "upstream session expired; logging in again");
                    cookie = self
                        .renew(ctx, cookie.generation)
                        .await
                        .map_err(Attempt::sent)?;
                }
                Exchange::SessionExpired => {}
            }
        }
        Err(Attempt::sent(UpstreamError::LoginFailed(
            "session rejected right after login".into(),
        )))
    }

    async fn renew(&self, ctx: &CallContext, stale: u64) -> Result<SessionCookie, UpstreamError> {
        self.session.renew(stale, || self.login(ctx)).await
    }

    /// `POST /account/login`; returns the session cookie value. A span of its own, the
    /// parent of its attempts.
    async fn login(&self, ctx: &CallContext) -> Result<SecretString, UpstreamError> {
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

    async fn login_attempts(&self, ctx: &CallContext) -> Result<SecretString, UpstreamError> {
        let (Some(user), Some(password)) = (&self.username, &self.password) else {
            self.metrics.login(false);
            return Err(UpstreamError::LoginFailed(
                "the configured session cookie was rejected and no service account is configured"
                    .into(),
            ));
        };
        let body = serde_json::to_vec(&api::LoginBody {
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

    /// One login attempt. Success is HTTP 2xx, an envelope saying success (its `data` is not
    /// read) and a session cookie.
    async fn try_login(&self, ctx: &CallContext, body: &[u8]) -> Result<SecretString, Attempt> {
        let resp = self
            .request(ctx, Operation::Login, None, Some(body), None)
            .send()
            .await
            .map_err(|e| Attempt::from_transport(&e))?;
        let status = resp.status();
        tracing::Span::current().record("http.response.status_code", status.as_u16());
        let cookie = session_cookie(resp.headers());
        let content_type = content_type(resp.headers());
        let bytes = read_body(resp).await.map_err(Attempt::sent)?;
        let refused = |why: String| Attempt::sent(UpstreamError::LoginFailed(why));
        if status.is_server_error() || status == reqwest::StatusCode::TOO_MANY_REQUESTS {
            return Err(Attempt::sent(http_status_error(status, None)));
        }
        if !status.is_success() {
            let r = Refusal::of_body(content_type.as_deref(), &bytes, "no reason given");
            return Err(refused(format!(
                "login refused (HTTP {status}): {}",
                r.message
            )));
        }
        if api::is_not_json(content_type.as_deref(), &bytes) {
            return Err(refused(format!(
                "login answered HTTP {status} with a page that is not JSON"
            )));
        }
        match api::decode::<IgnoredAny>(&bytes) {
            Decoded::Ok(_) => {
                cookie.ok_or_else(|| refused("login succeeded without a session cookie".into()))
            }
            Decoded::Failed { status_code, .. } => {
                Err(refused(format!("login refused (statusCode {status_code})")))
            }
            Decoded::Malformed(why) => Err(refused(format!("login answer unreadable: {why}"))),
        }
    }

    fn request(
        &self,
        ctx: &CallContext,
        op: Operation,
        id: Option<i64>,
        body: Option<&[u8]>,
        cookie: Option<&SessionCookie>,
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
        if let Some(c) = cookie {
            req = req.header(COOKIE, c.header.clone());
        }
        if let Some(b) = body {
            req = req
                .header("content-type", "application/json")
                .body(b.to_vec());
        }
        req
    }

    /// One HTTP exchange carrying our session cookie, and what its answer means
    /// (docs/UPSTREAM.md, "How answers are read").
    async fn send<T: Payload>(
        &self,
        ctx: &CallContext,
        op: Operation,
        id: Option<i64>,
        body: Option<&[u8]>,
        cookie: &SessionCookie,
    ) -> Result<Exchange<T>, Attempt> {
        let resp = self
            .request(ctx, op, id, body, Some(cookie))
            .send()
            .await
            .map_err(|e| Attempt::from_transport(&e))?;
        let status = resp.status();
        tracing::Span::current().record("http.response.status_code", status.as_u16());
        if status == 401 || status == 403 || status.is_redirection() {
            return Ok(Exchange::SessionExpired);
        }
        let retry_after = retry_after(resp.headers());
        let content_type = content_type(resp.headers());
        let bytes = read_body(resp).await.map_err(Attempt::sent)?;
        let answer = if status.is_success() {
            // A login page instead of JSON, on a call that carried our cookie: the vendor
            // did not run the call, it asks us to log in.
            if !bytes.is_empty() && api::is_not_json(content_type.as_deref(), &bytes) {
                return Ok(Exchange::SessionExpired);
            }
            match api::decode::<T>(&bytes) {
                Decoded::Ok(v) => Ok(v),
                Decoded::Failed {
                    status_code: api::status_codes::UNAUTHORIZED,
                    ..
                } => return Ok(Exchange::SessionExpired),
                Decoded::Failed {
                    status_code,
                    message,
                } => Err(classify_failure(status_code, message)),
                Decoded::Malformed(why) => Err(UpstreamError::Unreadable(format!(
                    "HTTP {}: {why}",
                    status.as_u16()
                ))),
            }
        } else if is_refusal(status) {
            let fallback = format!("HTTP {}", status.as_u16());
            let refusal = Refusal::of_body(content_type.as_deref(), &bytes, &fallback);
            Err(if status == reqwest::StatusCode::NOT_FOUND {
                UpstreamError::NotFound(refusal.message)
            } else {
                UpstreamError::Rejected(refusal)
            })
        } else {
            Err(http_status_error(status, retry_after))
        };
        Ok(Exchange::Answer(answer))
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

/// HTTP statuses the vendor uses to refuse a request it understood: the caller's 4xx.
fn is_refusal(status: reqwest::StatusCode) -> bool {
    matches!(status.as_u16(), 400 | 404 | 409 | 422)
}

fn not_found_as(e: UpstreamError, what: String) -> UpstreamError {
    match e {
        UpstreamError::NotFound(_) => UpstreamError::NotFound(what),
        other => other,
    }
}

/// For calls that name no audience (creates), "not found" is about something the caller
/// sent (a campaign, say): a refusal, not a missing resource of ours.
fn refused_if_not_found(e: UpstreamError) -> UpstreamError {
    match e {
        UpstreamError::NotFound(message) => UpstreamError::Rejected(Refusal::message(&message)),
        other => other,
    }
}

/// An envelope with `success: false`, by its status code.
fn classify_failure(status_code: i64, message: Option<String>) -> UpstreamError {
    let refusal = Refusal::message(
        message
            .as_deref()
            .unwrap_or(&format!("statusCode {status_code}")),
    );
    match status_code {
        api::status_codes::NOT_FOUND => UpstreamError::NotFound(refusal.message),
        api::status_codes::FORBIDDEN => {
            UpstreamError::Failure(format!("forbidden: {}", refusal.message))
        }
        400..=499 => UpstreamError::Rejected(refusal),
        _ => UpstreamError::Failure(format!("envelope statusCode {status_code}")),
    }
}

fn http_status_error(status: reqwest::StatusCode, retry_after: Option<Duration>) -> UpstreamError {
    match status {
        reqwest::StatusCode::SERVICE_UNAVAILABLE | reqwest::StatusCode::TOO_MANY_REQUESTS => {
            UpstreamError::Unavailable(format!("HTTP {}", status.as_u16()), retry_after)
        }
        _ => UpstreamError::Failure(format!("HTTP {}", status.as_u16())),
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

fn content_type(headers: &HeaderMap) -> Option<String> {
    headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

/// `Retry-After` in seconds (the vendor's date form is not worth reading), at most a minute.
fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let secs: u64 = headers
        .get(RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()?;
    Some(Duration::from_secs(secs.min(60)))
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

fn session_cookie(headers: &HeaderMap) -> Option<SecretString> {
    let prefix = format!("{}=", api::SESSION_COOKIE);
    headers
        .get_all(SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(|v| {
            let pair = v.split(';').next()?.trim();
            let value = pair.strip_prefix(&prefix)?;
            (!value.is_empty()).then(|| SecretString::from(value.to_string()))
        })
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

    #[test]
    fn refusals_are_the_callers_and_never_outages() {
        let r = classify_failure(400, Some("Name\u{0} is\n\n required".into()));
        assert!(matches!(&r, UpstreamError::Rejected(x) if x.message == "Name is required"));
        assert!(!r.is_outage() && !r.is_transient());
        assert!(classify_failure(500, None).is_outage());
        assert!(matches!(
            classify_failure(404, None),
            UpstreamError::NotFound(_)
        ));
        assert!(!UpstreamError::Unreadable("x".into()).is_outage());
        for status in [400, 404, 409, 422] {
            assert!(is_refusal(reqwest::StatusCode::from_u16(status).unwrap()));
        }
        for status in [401, 403, 405, 415, 429, 500, 503] {
            assert!(!is_refusal(reqwest::StatusCode::from_u16(status).unwrap()));
        }
    }
}
