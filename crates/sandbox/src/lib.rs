//! The simulated Digital Audience API: an in-process HTTP server that behaves like the
//! vendor as the gateway reads the vendor's reference page (the repository's account of it
//! is `docs/UPSTREAM.md`), for `audience-gateway sandbox`, the integration tests and the
//! load benchmarks. Where the page is silent, the default ("contract") style answers as
//! the gateway assumes; the [`VendorStyle`] flags and the [`ExpiryStyle`]s make it answer
//! the other ways a real ASP.NET service plausibly could, so the gateway is also tested
//! against a vendor it did not write.
//!
//! It deliberately shares no types with the gateway's upstream client (it has its own
//! request and response types), so a client bug cannot be masked by a shared DTO.
//!
//! # Seed data
//! Identical on every start: campaigns 1-3 (campaign 1 is "Sandbox campaign");
//! `seed_audiences` audiences from id 1001 — 1001 always exists and has `crmData` (insights
//! READY), 1002 (if seeded) has `crmData: null`, 1003 (if seeded) is already activated;
//! platform accounts 501 (Meta), 502 (Google Ads) with an `accessToken`, and 503 (The Trade
//! Desk) without one. New audiences, campaigns and segments get increasing ids (segments
//! from 7001; audiences from 3000000001 in the `azure` style).
//!
//! # Assumptions of the contract style (the vendor does not document these)
//! - Every vendor answer is the envelope `{"data", "status": {"statusCode", "message"},
//!   "success"}`. A refused call is HTTP 200 with `success: false`, `data: null`, a
//!   non-zero `statusCode` and a `message`:
//!   - 404: the audience does not exist (`"Audience 123 not found"`) — load, update,
//!     activate, delete;
//!   - 400: validation — malformed JSON, a wrong type or a missing field (`"Invalid request
//!     body: ..."`), a blank or over-long (> 255) name, an unknown `campaignId`, an
//!     unparsable date, `endDate <= startDate`, an unknown `accountId`;
//!   - 401: login with wrong credentials (and no `Set-Cookie`).
//! - Integer fields also accept numeric strings (`"campaignId": "1"`), as the reference's
//!   own example quotes them. Field names are case-sensitive camelCase; unknown fields are
//!   ignored; the `Content-Type` is not checked.
//! - `update` replaces name and description: an absent `description` clears it.
//! - Activation checks, in order: body, name, dates, audience (404), account (400).
//!   Dates are RFC 3339, or without offset (taken as UTC). Activating again is allowed and
//!   creates another segment.
//! - A successful login answers `Set-Cookie: digitalAudience=<64 hex>; Path=/; HttpOnly`.
//!   A session lasts `session_ttl` from login (no sliding renewal).
//! - A call without a live session (missing, unknown or expired cookie) is answered per
//!   [`ExpiryStyle`]: 401, 403, or 302 with
//!   `Location: /account/login?ReturnUrl=<percent-encoded original path and query>`, all
//!   with an empty body; or HTTP 200 with the HTML login page (`login-page`); or HTTP 200
//!   with the envelope `{"data": null, "status": {"statusCode": 401, "message": "Session
//!   expired"}, "success": false}` (`envelope`). `GET /account/login` answers 200 with the
//!   same HTML login page, as an ASP.NET backend would: a client that follows the redirect
//!   gets HTML, not an envelope.
//! - Routing ignores case and a trailing slash. An unknown path, or a non-integer id in
//!   `loadAudienceById/{id}`, is HTTP 404 with an HTML body; a wrong method is HTTP 405.
//!   Neither is counted as a call.
//! - New audiences carry `lifetimeStatus: null`; seeded ones "Active" (1). The seeded
//!   states "READY" (1) and "PROCESSING" (3) for `audienceState`, and the ids of
//!   `insightsState` PENDING (1) / READY (2), are invented: they exercise the gateway's
//!   pass-through of values the vendor does not list.
//!
//! # Vendor styles ([`VendorStyle`], combinable)
//! - `strict`: model binding as strict as the page allows, before the vendor's rules run.
//!   Refused with HTTP 400, `Content-Type: application/problem+json; charset=utf-8` and
//!   `{"type": "https://tools.ietf.org/html/rfc9110#section-15.5.1", "title": "One or more
//!   validation errors occurred.", "status": 400, "errors": {"<Field>": ["<message>"]},
//!   "traceId": "00-<32 hex>-<16 hex>-00"}`, fields in PascalCase (`$` for the whole
//!   body): a missing or `null` required field (login `userName`, `password`; create
//!   `name`, `campaignId`; update `id`, `name`; all six activation fields, `description`
//!   included; delete `id`; campaign `name`); an unknown field; a body without a JSON
//!   `Content-Type` (`application/json`, `text/json`, `application/*+json`); an id that is not
//!   a 64-bit integer (the vendor's `long`); malformed JSON or a wrong type.
//!   Quoted numbers still bind. The vendor's own refusals stay envelopes unless
//!   `problem-details` is on too.
//! - `problem-details`: refusals are ProblemDetails instead of HTTP 200 envelopes:
//!   validation is HTTP 400 as above, naming the field (`Name` for a blank name,
//!   `CampaignId` for an unknown campaign, `StartDate`/`EndDate` for a bad date or an end
//!   not after the start, `AccountId` for an unknown account, the field for a missing one or
//!   a wrong type); an unknown audience is HTTP 404 `{"type": "...#section-15.5.5", "title":
//!   "Not Found", "status": 404, "detail": "Audience 123 not found", "traceId"}`; a wrong
//!   login is HTTP 401 `{"type": "...#section-15.5.2", "title": "Unauthorized", "status":
//!   401, "detail": "Invalid user name or password", "traceId"}`. Without `strict`, what the
//!   contract style accepts is still accepted.
//! - `nulls` (`loose_data`): the same data in every other shape the page allows; nothing
//!   that is not `null` differs from the contract style but ids quoted and history keys
//!   shortened. Quoted ids (`id`, `userId`, `campaignId`, an upload's `audienceId`, an
//!   account's `id`, a campaign's `id`, `segmentId`); unknown fields in the envelope
//!   (`errors: null`), its `status` (`details: []`) and every object (maps keyed by date
//!   or identifier type excepted); `null` for an audience's `false` booleans,
//!   `crmData.size` and `crmData.insightsStateId`; upload history keys that are date-only
//!   or without offset beside RFC 3339 ones, with `null` counts, rates and whole `dataSet`
//!   / `matchRates` maps (which event gets which is fixed, see `loose.rs`: among the seeded
//!   audiences 1001 has an RFC 3339 and a date-only key, 1003 one without offset); login
//!   and delete answer `data: null`, update `data: true`, activation `data: null` with
//!   `flowId` and `segmentId` at the envelope's top level. `tagCollection` is `null`, as in
//!   the contract style.
//! - `aspnet`: all three.
//! - `azure` (also `iis`): `strict` and `problem-details`, hosted as ASP.NET Core with its
//!   defaults on Azure App Service (`app_service`): two instances behind an `ARRAffinity`
//!   cookie with sessions known only to the instance that opened them, sliding session
//!   cookies, `204 No Content` for update, delete and a load that finds nothing, ids beyond
//!   32 bits for new audiences, .NET dates, `Retry-After` dates (see `azure.rs`).
//!
//! [`VendorStyle::ALL_NAMED`] lists the presets tests iterate over.
//!
//! # Fault injection and observation (not part of the vendor API)
//! Order for a routed vendor call: it is counted (and, unless it is the login, its headers
//! recorded); then "down" answers 503; then the latency is awaited; then `error_rate`
//! answers a share of calls 500; then the session is checked; then, in the `strict` or
//! `problem-details` style, the request is bound. Both fault answers have HTML bodies, not
//! envelopes. The knobs are on [`SimulatorHandle`] and over HTTP, unaffected by the faults
//! themselves:
//! - `GET /__sim/faults`, `POST /__sim/faults` `{"latencyMs"?, "errorRate"?, "down"?}`
//!   (absent knobs keep their value; answers the current knobs; HTTP 400 on a bad body or
//!   an `errorRate` outside 0.0-1.0);
//! - `GET /__sim/stats` → `{"logins": n, "calls": {"login": n, "createAudience": n, ...}}`
//!   (every request routed to the operation, whatever its outcome), and `"writes":
//!   {"createAudience": n, "updateAudience": n, "activateAudience": n, "deleteAudience": n,
//!   "createCampaign": n}` (only the writes the simulator carried out: a call refused,
//!   failed by a fault or answered as an expired session is not among them);
//! - `GET /__sim/style`, `POST /__sim/style` `{"expiryStyle"?, "vendorStyle"?}` (names as
//!   their `FromStr` takes them; absent ones keep their value; answers the current styles
//!   by canonical name, e.g. `{"expiryStyle": "login-page", "vendorStyle":
//!   "problem-details,nulls"}`; HTTP 400 on a bad body or name);
//! - `POST /__sim/sessions/expire` → 204, invalidates every session.

mod azure;
mod control;
mod handlers;
mod loose;
mod problem;
mod state;
mod strict;
#[cfg(test)]
mod tests;

use std::fmt;
use std::net::SocketAddr;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use actix_web::dev::ServerHandle;
use actix_web::{web, App, HttpServer};
use serde::{Deserialize, Serialize};

use control::{Operation, Shared};

/// How the simulator answers a call whose session is missing or expired.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ExpiryStyle {
    /// HTTP 401 with an empty body.
    #[default]
    Unauthorized,
    /// HTTP 403 with an empty body.
    Forbidden,
    /// HTTP 302 to `/account/login?ReturnUrl=...`, as an ASP.NET cookie-auth backend does.
    Redirect,
    /// HTTP 200, `Content-Type: text/html`, the login page's HTML: what a client sees when
    /// the backend serves its login form in place of the answer.
    LoginPage,
    /// HTTP 200 with the envelope `{"data": null, "status": {"statusCode": 401, "message":
    /// "Session expired"}, "success": false}`.
    Envelope,
}

impl ExpiryStyle {
    /// Every style, for tests that must hold whichever way the vendor reports expiry.
    pub const ALL: [ExpiryStyle; 5] = [
        ExpiryStyle::Unauthorized,
        ExpiryStyle::Forbidden,
        ExpiryStyle::Redirect,
        ExpiryStyle::LoginPage,
        ExpiryStyle::Envelope,
    ];

    /// The style's canonical name, as `FromStr` and `/__sim/style` accept it.
    pub fn name(self) -> &'static str {
        match self {
            ExpiryStyle::Unauthorized => "unauthorized",
            ExpiryStyle::Forbidden => "forbidden",
            ExpiryStyle::Redirect => "redirect",
            ExpiryStyle::LoginPage => "login-page",
            ExpiryStyle::Envelope => "envelope",
        }
    }
}

impl fmt::Display for ExpiryStyle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for ExpiryStyle {
    type Err = String;

    /// Parses `unauthorized`/`401`, `forbidden`/`403`, `redirect`/`302`,
    /// `login-page`/`html` or `envelope`.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text.trim().to_ascii_lowercase().as_str() {
            "unauthorized" | "401" => Ok(ExpiryStyle::Unauthorized),
            "forbidden" | "403" => Ok(ExpiryStyle::Forbidden),
            "redirect" | "302" => Ok(ExpiryStyle::Redirect),
            "login-page" | "html" => Ok(ExpiryStyle::LoginPage),
            "envelope" => Ok(ExpiryStyle::Envelope),
            other => Err(format!(
                "unknown expiry style '{other}' (expected unauthorized, forbidden, redirect, \
                 login-page or envelope)"
            )),
        }
    }
}

/// Where the simulator departs from the gateway's reading of the vendor's page, in ways a
/// real ASP.NET service plausibly could. The default (all `false`, named `contract`) is the
/// vendor exactly as the gateway assumes it; see the crate docs for what each flag does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct VendorStyle {
    /// Model binding as strict as the page allows: required fields, no unknown fields,
    /// `Content-Type: application/json`, 64-bit ids; refusals are HTTP 400 ProblemDetails.
    pub strict: bool,
    /// The simulator's own refusals are HTTP 400/401/404 with ProblemDetails bodies instead of
    /// HTTP 200 envelopes with `success: false`.
    pub problem_details: bool,
    /// Data in every shape the page allows: nulls, quoted ids, date-only history keys,
    /// unknown fields, other `data` for update/delete/login, a top-level `flowId`.
    pub loose_data: bool,
    /// Hosted as ASP.NET Core on Azure App Service: two instances behind an affinity
    /// cookie, sliding session cookies, 204 for empty answers, 64-bit ids, .NET dates.
    pub app_service: bool,
}

impl VendorStyle {
    /// The named presets, for tests that run the same flow against each.
    pub const ALL_NAMED: [(&'static str, VendorStyle); 6] = [
        ("contract", VendorStyle::CONTRACT),
        (
            "strict",
            VendorStyle {
                strict: true,
                ..VendorStyle::CONTRACT
            },
        ),
        (
            "problem-details",
            VendorStyle {
                problem_details: true,
                ..VendorStyle::CONTRACT
            },
        ),
        (
            "nulls",
            VendorStyle {
                loose_data: true,
                ..VendorStyle::CONTRACT
            },
        ),
        ("aspnet", VendorStyle::ASPNET),
        ("azure", VendorStyle::AZURE),
    ];

    /// The vendor as the gateway assumes it (the default).
    pub const CONTRACT: VendorStyle = VendorStyle {
        strict: false,
        problem_details: false,
        loose_data: false,
        app_service: false,
    };

    /// The ASP.NET departures at once: strict binding, ProblemDetails, loose data.
    pub const ASPNET: VendorStyle = VendorStyle {
        strict: true,
        problem_details: true,
        loose_data: true,
        app_service: false,
    };

    /// ASP.NET Core with its defaults on Azure App Service: strict binding, ProblemDetails
    /// and the hosting's behaviour (`azure`).
    pub const AZURE: VendorStyle = VendorStyle {
        strict: true,
        problem_details: true,
        loose_data: false,
        app_service: true,
    };
}

impl fmt::Display for VendorStyle {
    /// The comma-separated flag names (`strict,problem-details,nulls`), `contract` for none.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = [
            (self.strict, "strict"),
            (self.problem_details, "problem-details"),
            (self.loose_data, "nulls"),
            (self.app_service, "azure"),
        ]
        .into_iter()
        .filter_map(|(on, name)| on.then_some(name))
        .collect();
        if names.is_empty() {
            f.write_str("contract")
        } else {
            f.write_str(&names.join(","))
        }
    }
}

impl FromStr for VendorStyle {
    type Err = String;

    /// Parses a comma-separated list of `contract` (adds nothing), `strict`,
    /// `problem-details`, `nulls`, `aspnet` (those three) and `azure` (also `iis`: strict,
    /// problem-details and the App Service hosting); the flags named are combined.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let mut style = VendorStyle::CONTRACT;
        for name in text.split(',').map(str::trim) {
            match name.to_ascii_lowercase().as_str() {
                "contract" => {}
                "strict" => style.strict = true,
                "problem-details" => style.problem_details = true,
                "nulls" => style.loose_data = true,
                "aspnet" => {
                    style.strict = true;
                    style.problem_details = true;
                    style.loose_data = true;
                }
                "azure" | "iis" => {
                    style.strict = true;
                    style.problem_details = true;
                    style.app_service = true;
                }
                other => {
                    return Err(format!(
                        "unknown vendor style '{other}' (expected a comma-separated list of \
                         contract, strict, problem-details, nulls, aspnet, azure)"
                    ))
                }
            }
        }
        Ok(style)
    }
}

/// Settings of one simulator.
#[derive(Clone)]
pub struct SimulatorConfig {
    /// The only user name the login accepts.
    pub username: String,
    /// The only password the login accepts.
    pub password: String,
    /// How long a session lives after its login.
    pub session_ttl: Duration,
    /// How a call without a live session is answered (changeable at run time).
    pub expiry_style: ExpiryStyle,
    /// Where the simulator departs from the contract (changeable at run time).
    pub style: VendorStyle,
    /// How many audiences to seed, from id 1001.
    pub seed_audiences: usize,
    /// Delay added to every vendor call (changeable at run time).
    pub latency: Duration,
    /// Share of vendor calls answered HTTP 500, 0.0-1.0 (changeable at run time).
    pub error_rate: f64,
    /// Server worker threads; one suffices for tests, load benchmarks may need more.
    pub workers: usize,
}

impl Default for SimulatorConfig {
    fn default() -> Self {
        SimulatorConfig {
            username: "sandbox".to_owned(),
            password: "sandbox-password".to_owned(),
            session_ttl: Duration::from_secs(30 * 60),
            expiry_style: ExpiryStyle::Unauthorized,
            style: VendorStyle::CONTRACT,
            seed_audiences: 5,
            latency: Duration::ZERO,
            error_rate: 0.0,
            workers: 1,
        }
    }
}

impl fmt::Debug for SimulatorConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SimulatorConfig")
            .field("username", &self.username)
            .field("password", &"[redacted]")
            .field("session_ttl", &self.session_ttl)
            .field("expiry_style", &self.expiry_style)
            .field("style", &self.style)
            .field("seed_audiences", &self.seed_audiences)
            .field("latency", &self.latency)
            .field("error_rate", &self.error_rate)
            .field("workers", &self.workers)
            .finish()
    }
}

/// The simulated vendor API.
pub struct Simulator;

impl Simulator {
    /// Binds `addr` (use "127.0.0.1:0" in tests) and serves in the current actix/tokio
    /// runtime, as a spawned task; returns once bound.
    pub async fn start(config: SimulatorConfig, addr: &str) -> std::io::Result<SimulatorHandle> {
        let listener = std::net::TcpListener::bind(addr)?;
        let addr = listener.local_addr()?;
        let workers = config.workers.max(1);
        let shared = Arc::new(Shared::new(config));
        let data = web::Data::from(Arc::clone(&shared));
        let server = HttpServer::new(move || {
            App::new()
                .app_data(data.clone())
                .default_service(web::to(handlers::dispatch))
        })
        .workers(workers)
        .disable_signals()
        .shutdown_timeout(1)
        .listen(listener)?
        .run();
        let server_handle = server.handle();
        tokio::spawn(async move {
            if let Err(error) = server.await {
                tracing::error!(%error, "sandbox simulator stopped with an error");
            }
        });
        tracing::info!(%addr, "sandbox simulator listening");
        Ok(SimulatorHandle {
            shared,
            server: server_handle,
            addr,
        })
    }
}

/// Controls and observes a running simulator; clones control the same one.
#[derive(Clone)]
pub struct SimulatorHandle {
    shared: Arc<Shared>,
    server: ServerHandle,
    addr: SocketAddr,
}

impl fmt::Debug for SimulatorHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SimulatorHandle")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl SimulatorHandle {
    /// The simulator's base URL, e.g. `http://127.0.0.1:40123`.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Sets the delay added to every vendor call.
    pub fn set_latency(&self, latency: Duration) {
        self.shared.set_latency(latency);
    }

    /// Sets the share of vendor calls answered HTTP 500 (clamped to 0.0-1.0).
    pub fn set_error_rate(&self, rate: f64) {
        self.shared.set_error_rate(rate);
    }

    /// Makes every vendor call answer HTTP 503 (or stops doing so).
    pub fn set_down(&self, down: bool) {
        self.shared.set_down(down);
    }

    /// Changes how a call without a live session is answered.
    pub fn set_expiry_style(&self, style: ExpiryStyle) {
        self.shared.set_expiry_style(style);
    }

    /// Changes where the simulator departs from the contract.
    pub fn set_vendor_style(&self, style: VendorStyle) {
        self.shared.set_vendor_style(style);
    }

    /// Invalidates every live session now.
    pub fn expire_sessions(&self) {
        self.shared.expire_sessions();
    }

    /// Makes every live session `by` older: its expiry comes that much closer, and in the
    /// `azure` style a session past half its lifetime is re-issued on its next answer.
    pub fn age_sessions(&self, by: Duration) {
        self.shared.age_sessions(by);
    }

    /// Login requests received, whatever their outcome.
    pub fn login_count(&self) -> u64 {
        self.shared.call_count(Operation::Login)
    }

    /// Requests received for `operation` ("login", "createAudience", "updateAudience",
    /// "activateAudience", "loadAudience", "deleteAudience", "createCampaign",
    /// "loadPlatformAccounts"), whatever their outcome; 0 for an unknown name.
    pub fn call_count(&self, operation: &str) -> u64 {
        Operation::named(operation).map_or(0, |op| self.shared.call_count(op))
    }

    /// Writes the simulator carried out for `operation` ("createAudience",
    /// "updateAudience", "activateAudience", "deleteAudience", "createCampaign"): unlike
    /// [`call_count`](Self::call_count), a call refused, failed by a fault or answered as an
    /// expired session is not counted, so a test can prove a write happened exactly once.
    /// 0 for a read, the login or an unknown name.
    pub fn writes(&self, operation: &str) -> u64 {
        Operation::named(operation).map_or(0, |op| self.shared.write_count(op))
    }

    /// Headers (lower-case names) of the most recent vendor call other than the login.
    pub fn last_request_headers(&self) -> Vec<(String, String)> {
        self.shared.last_headers()
    }

    /// Stops the server gracefully (waits at most a second for open requests).
    pub async fn stop(&self) {
        self.server.stop(true).await;
    }
}
