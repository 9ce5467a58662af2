//! The Digital Audience API client: one pooled HTTP client, the session cookie, deadlines,
//! safe retries, bounded concurrency and a circuit breaker. The vendor's wire format lives
//! in [`api`]; nothing else in the gateway knows it.

pub mod api;
mod breaker;
mod session;

use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::Rng;
use reqwest::header::{HeaderMap, COOKIE, SET_COOKIE};
use secrecy::{ExposeSecret, SecretString};
use serde::de::DeserializeOwned;
use serde::Serialize;
use sha2::{Digest, Sha256};
use tokio::sync::Semaphore;

use crate::domain::{
    Activation, Audience, AudiencePatch, Campaign, NewActivation, NewAudience, PlatformAccount,
};
use crate::error::ApiError;
use crate::metrics::Metrics;
use crate::settings::{ms, UpstreamSettings};
use api::{AudienceDto, Decoded, Operation};
pub use breaker::BreakerState;
use breaker::CircuitBreaker;
use session::{Session, SessionCookie};

/// Largest upstream body the gateway reads.
const MAX_UPSTREAM_BODY: usize = 16 * 1024 * 1024;

/// Why an upstream call failed. `Display` never contains secrets.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("upstream did not answer within the deadline")]
    Timeout,
    #[error("upstream unavailable: {0}")]
    Unavailable(String, Option<Duration>),
    #[error("upstream failed: {0}")]
    Failure(String),
    #[error("not found upstream: {0}")]
    NotFound(String),
    #[error("upstream rejected the request: {0}")]
    Rejected(String),
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
                | UpstreamError::LoginFailed(_)
        )
    }

    /// Whether it counts against the circuit breaker.
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
            UpstreamError::NotFound(what) => ApiError::NotFound { what },
            UpstreamError::Rejected(message) => ApiError::UpstreamRejected { message },
        }
    }
}

/// Per-request values sent upstream.
#[derive(Debug, Clone, Default)]
pub struct CallContext {
    pub request_id: String,
    pub traceparent: Option<String>,
}

/// Result of one HTTP exchange: the decoded envelope, or the session was not accepted.
enum Exchange<T> {
    Answer(Decoded<T>),
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
            .connect_timeout(ms(s.connect_timeout_ms))
            .timeout(ms(s.request_timeout_ms))
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
        Ok(Self {
            http,
            base_url: reqwest::Url::parse(&base)?,
            identity: identity.into(),
            username: s.username.clone(),
            password: s.password.clone(),
            session: Session::new(s.session_cookie.clone()),
            permits: Semaphore::new(s.max_concurrency),
            queue_timeout: ms(s.queue_timeout_ms),
            budget,
            retries: s.retries,
            retry_base: ms(s.retry_base_ms),
            breaker: CircuitBreaker::new(
                s.breaker_failures,
                Duration::from_secs(s.breaker_open_secs),
            ),
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

    /// `GET` an audience with its CRM data.
    pub async fn load_audience<C: DeserializeOwned>(
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
    }

    /// Updates name and description; `name` must be the full new name.
    pub async fn update_audience(
        &self,
        ctx: &CallContext,
        id: i64,
        name: &str,
        patch: &AudiencePatch,
    ) -> Result<Audience, UpstreamError> {
        let body = api::UpdateAudienceBody {
            id,
            name,
            description: patch.description.as_deref(),
        };
        self.call::<AudienceDto, _>(ctx, Operation::UpdateAudience, None, Some(&body))
            .await
            .map(AudienceDto::into_audience)
            .map_err(|e| not_found_as(e, format!("audience {id}")))
    }

    /// Deletes an audience.
    pub async fn delete_audience(&self, ctx: &CallContext, id: i64) -> Result<(), UpstreamError> {
        let deleted: bool = self
            .call(
                ctx,
                Operation::DeleteAudience,
                None,
                Some(&api::DeleteAudienceBody { id }),
            )
            .await
            .map_err(|e| not_found_as(e, format!("audience {id}")))?;
        if deleted {
            Ok(())
        } else {
            Err(UpstreamError::Failure("delete answered data: false".into()))
        }
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
    }

    /// Lists platform accounts, without their access tokens.
    pub async fn platform_accounts(
        &self,
        ctx: &CallContext,
    ) -> Result<Vec<PlatformAccount>, UpstreamError> {
        self.call::<Vec<api::PlatformAccountDto>, _>(
            ctx,
            Operation::LoadPlatformAccounts,
            None,
            None::<&()>,
        )
        .await
        .map(|v| v.into_iter().map(Into::into).collect())
    }

    /// One vendor call with deadline, breaker, concurrency bound, session renewal and retries.
    /// (No span: the request id is on every log line already, and lines name `op` where it
    /// matters; a span per call cost about a microsecond.)
    async fn call<T: DeserializeOwned, B: Serialize>(
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
        let result = result.and_then(|decoded| match decoded {
            Decoded::Ok(v) => Ok(v),
            Decoded::Failed {
                status_code,
                message,
            } => Err(classify_failure(status_code, message)),
            Decoded::Malformed(why) => Err(UpstreamError::Failure(why)),
        });
        let outcome = match &result {
            Ok(_) => "ok",
            Err(e) => e.outcome(),
        };
        self.metrics
            .upstream_call(op.name(), outcome, started.elapsed());
        result
    }

    async fn guarded<T: DeserializeOwned>(
        &self,
        ctx: &CallContext,
        op: Operation,
        id: Option<i64>,
        body: Option<&[u8]>,
    ) -> Result<Decoded<T>, UpstreamError> {
        let probe = self
            .breaker
            .admit()
            .map_err(|wait| UpstreamError::Unavailable("circuit open".into(), Some(wait)))?;
        // A free permit needs no timer; only a caller that has to queue gets a deadline.
        let permit = match self.permits.try_acquire() {
            Ok(permit) => permit,
            Err(_) => tokio::time::timeout(self.queue_timeout, self.permits.acquire())
                .await
                .map_err(|_| {
                    UpstreamError::Unavailable(
                        "too many upstream calls in flight".into(),
                        Some(Duration::from_secs(1)),
                    )
                })?
                .map_err(|_| UpstreamError::Unavailable("client closed".into(), None))?,
        };
        let result = self.with_retries(ctx, op, id, body).await;
        drop(permit);
        self.breaker.record(
            result.as_ref().map_or_else(|e| !e.is_outage(), |_| true),
            probe,
        );
        result
    }

    async fn with_retries<T: DeserializeOwned>(
        &self,
        ctx: &CallContext,
        op: Operation,
        id: Option<i64>,
        body: Option<&[u8]>,
    ) -> Result<Decoded<T>, UpstreamError> {
        let mut attempt = 0;
        loop {
            match self.with_session(ctx, op, id, body).await {
                Err(Attempt::Failed(e, sent))
                    if attempt < self.retries && (op.is_safe() || !sent) && e.is_outage() =>
                {
                    attempt += 1;
                    let backoff = self.retry_base * 2u32.pow(attempt - 1);
                    let jitter = rand::rng().random_range(0..=backoff.as_millis() as u64);
                    tracing::debug!(op = op.name(), attempt, error = %e, "retrying upstream call");
                    tokio::time::sleep(backoff + Duration::from_millis(jitter)).await;
                }
                Err(Attempt::Failed(e, _)) => return Err(e),
                Ok(b) => return Ok(b),
            }
        }
    }

    /// Sends with the current session; on an expired-session answer renews once and resends.
    async fn with_session<T: DeserializeOwned>(
        &self,
        ctx: &CallContext,
        op: Operation,
        id: Option<i64>,
        body: Option<&[u8]>,
    ) -> Result<Decoded<T>, Attempt> {
        let mut cookie = match self.session.current().await {
            Some(c) => c,
            None => self
                .renew(ctx, 0)
                .await
                .map_err(|e| Attempt::Failed(e, false))?,
        };
        for renewed in [false, true] {
            match self.send(ctx, op, id, body, Some(&cookie)).await? {
                Exchange::Answer(decoded) => return Ok(decoded),
                Exchange::SessionExpired if !renewed => {
                    tracing::info!(op = op.name(), "upstream session expired; logging in again");
                    cookie = self
                        .renew(ctx, cookie.generation)
                        .await
                        .map_err(|e| Attempt::Failed(e, true))?;
                }
                Exchange::SessionExpired => {}
            }
        }
        Err(Attempt::Failed(
            UpstreamError::LoginFailed("session rejected right after login".into()),
            true,
        ))
    }

    async fn renew(&self, ctx: &CallContext, stale: u64) -> Result<SessionCookie, UpstreamError> {
        self.session.renew(stale, || self.login(ctx)).await
    }

    /// `POST /account/login`; returns the session cookie value.
    #[tracing::instrument(skip_all)]
    async fn login(&self, ctx: &CallContext) -> Result<SecretString, UpstreamError> {
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
        let mut last = UpstreamError::LoginFailed("not attempted".into());
        for attempt in 0..=self.retries {
            if attempt > 0 {
                tokio::time::sleep(self.retry_base * 2u32.pow(attempt - 1)).await;
            }
            match self.try_login(ctx, &body).await {
                Ok(cookie) => {
                    self.metrics.login(true);
                    self.metrics
                        .upstream_call(Operation::Login.name(), "ok", started.elapsed());
                    return Ok(cookie);
                }
                Err(e) if e.is_outage() => last = e,
                Err(e) => {
                    last = e;
                    break;
                }
            }
        }
        self.metrics.login(false);
        self.metrics
            .upstream_call(Operation::Login.name(), last.outcome(), started.elapsed());
        tracing::warn!(error = %last, "upstream login failed");
        Err(match last {
            e @ (UpstreamError::Timeout | UpstreamError::Unavailable(..)) => e,
            other => UpstreamError::LoginFailed(other.to_string()),
        })
    }

    async fn try_login(
        &self,
        ctx: &CallContext,
        body: &[u8],
    ) -> Result<SecretString, UpstreamError> {
        let resp = self
            .request(ctx, Operation::Login, None, Some(body), None)
            .send()
            .await
            .map_err(|e| transport_error(&e))?;
        let status = resp.status();
        let cookie = session_cookie(resp.headers());
        let bytes = read_body(resp).await?;
        if !status.is_success() {
            return Err(http_status_error(status));
        }
        match api::decode::<bool>(&bytes) {
            Decoded::Ok(true) => cookie.ok_or_else(|| {
                UpstreamError::LoginFailed("login succeeded without a session cookie".into())
            }),
            Decoded::Ok(false) => Err(UpstreamError::LoginFailed(
                "login answered data: false".into(),
            )),
            Decoded::Failed { status_code, .. } => Err(UpstreamError::LoginFailed(format!(
                "login refused (statusCode {status_code})"
            ))),
            Decoded::Malformed(why) => Err(UpstreamError::Failure(why)),
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
        if let Some(tp) = &ctx.traceparent {
            req = req.header("traceparent", tp);
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

    async fn send<T: DeserializeOwned>(
        &self,
        ctx: &CallContext,
        op: Operation,
        id: Option<i64>,
        body: Option<&[u8]>,
        cookie: Option<&SessionCookie>,
    ) -> Result<Exchange<T>, Attempt> {
        let resp = self
            .request(ctx, op, id, body, cookie)
            .send()
            .await
            .map_err(|e| Attempt::Failed(transport_error(&e), !e.is_connect()))?;
        let status = resp.status();
        if status == 401 || status == 403 || status.is_redirection() {
            return Ok(Exchange::SessionExpired);
        }
        let bytes = read_body(resp)
            .await
            .map_err(|e| Attempt::Failed(e, true))?;
        // A 404 carrying an envelope is the vendor's "not found"; other non-2xx are failures.
        let envelope_404 = status == 404 && bytes.first() == Some(&b'{');
        if !(status.is_success() || envelope_404) {
            return Err(Attempt::Failed(http_status_error(status), true));
        }
        // Decoded once, here: an envelope statusCode 401 is an expired session too.
        match api::decode::<T>(&bytes) {
            Decoded::Failed {
                status_code: api::status_codes::UNAUTHORIZED,
                ..
            } => Ok(Exchange::SessionExpired),
            decoded => Ok(Exchange::Answer(decoded)),
        }
    }
}

/// A failed attempt, and whether the request may have reached the upstream.
enum Attempt {
    Failed(UpstreamError, bool),
}

fn not_found_as(e: UpstreamError, what: String) -> UpstreamError {
    match e {
        UpstreamError::NotFound(_) => UpstreamError::NotFound(what),
        other => other,
    }
}

fn classify_failure(status_code: i64, message: Option<String>) -> UpstreamError {
    // Vendor messages are shown to callers only for 4xx-class refusals; trim them hard.
    let message: String = message
        .unwrap_or_else(|| format!("statusCode {status_code}"))
        .chars()
        .take(300)
        .collect();
    match status_code {
        api::status_codes::NOT_FOUND => UpstreamError::NotFound(message),
        api::status_codes::FORBIDDEN => UpstreamError::Failure(format!("forbidden: {message}")),
        400..=499 => UpstreamError::Rejected(message),
        _ => UpstreamError::Failure(format!("statusCode {status_code}")),
    }
}

fn http_status_error(status: reqwest::StatusCode) -> UpstreamError {
    if status == reqwest::StatusCode::SERVICE_UNAVAILABLE {
        UpstreamError::Unavailable(format!("HTTP {status}"), None)
    } else {
        UpstreamError::Failure(format!("HTTP {status}"))
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
