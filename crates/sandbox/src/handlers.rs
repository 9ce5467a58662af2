//! Request handling: one case-insensitive dispatcher in front of the vendor calls and the
//! `/__sim/` admin endpoints.

use actix_web::http::{header, Method, StatusCode};
use actix_web::{web, HttpRequest, HttpResponse};
use chrono::{DateTime, NaiveDateTime, Utc};
use serde::de::{DeserializeOwned, Error as _};
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{json, Value};

use crate::control::{lock, Instance, Operation, Shared};
use crate::state::{Activation, ActivationOrder, Audience, Campaign, PlatformAccount, Rejection};
use crate::{azure, loose, problem, strict, ExpiryStyle, VendorStyle};

/// The session cookie's name.
pub(crate) const SESSION_COOKIE: &str = "digitalAudience";

const HTML_NOT_FOUND: &str = "<!DOCTYPE html><html><head><title>404 - Not Found</title></head>\
<body><h1>404 - File or directory not found.</h1></body></html>";
const HTML_METHOD_NOT_ALLOWED: &str =
    "<!DOCTYPE html><html><head><title>405 - Method Not Allowed</title></head>\
<body><h1>405 - HTTP verb used to access this page is not allowed.</h1></body></html>";
const HTML_SERVER_ERROR: &str = "<!DOCTYPE html><html><head><title>Runtime Error</title></head>\
<body><h1>Server Error in '/' Application.</h1><h2><i>Runtime Error</i></h2></body></html>";
const HTML_UNAVAILABLE: &str =
    "<!DOCTYPE html><html><head><title>Service Unavailable</title></head>\
<body><h1>HTTP Error 503. The service is unavailable.</h1></body></html>";
const HTML_LOGIN_PAGE: &str =
    "<!DOCTYPE html><html><head><title>Log in - Digital Audience</title></head>\
<body><form method=\"post\"><input name=\"userName\"><input name=\"password\" type=\"password\">\
<button>Log in</button></form></body></html>";

/// A routed vendor request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Call {
    Login,
    CreateAudience,
    UpdateAudience,
    ActivateAudience,
    LoadAudience(i64),
    DeleteAudience,
    CreateCampaign,
    LoadPlatformAccounts,
}

impl Call {
    fn operation(self) -> Operation {
        match self {
            Call::Login => Operation::Login,
            Call::CreateAudience => Operation::CreateAudience,
            Call::UpdateAudience => Operation::UpdateAudience,
            Call::ActivateAudience => Operation::ActivateAudience,
            Call::LoadAudience(_) => Operation::LoadAudience,
            Call::DeleteAudience => Operation::DeleteAudience,
            Call::CreateCampaign => Operation::CreateCampaign,
            Call::LoadPlatformAccounts => Operation::LoadPlatformAccounts,
        }
    }
}

/// What a vendor call succeeded with, before it is put into the vendor style's shape.
pub(crate) enum Reply {
    /// A login, with the new session's cookie value.
    LoggedIn(String),
    /// A created or loaded audience.
    Audience(Audience),
    /// The audience after an update.
    Updated(Audience),
    Activated(Activation),
    Deleted,
    Campaign(Campaign),
    Accounts(Vec<PlatformAccount>),
}

/// Where a request lands.
enum Route {
    Vendor(Call),
    /// `GET /account/login`: where a followed session redirect ends, an HTML page.
    LoginPage,
    Admin(Admin),
    NotFound,
    MethodNotAllowed,
}

enum Admin {
    Stats,
    Faults,
    SetFaults,
    Style,
    SetStyle,
    ExpireSessions,
}

/// Routes a lower-cased path without trailing slash; the vendor's routing ignores case.
fn route(method: &Method, path: &str) -> Route {
    let only = |allowed: Method, route: Route| {
        if *method == allowed {
            route
        } else {
            Route::MethodNotAllowed
        }
    };
    match path {
        "/account/login" if *method == Method::GET => Route::LoginPage,
        "/account/login" => only(Method::POST, Route::Vendor(Call::Login)),
        "/audience/createcrmaudience" => only(Method::POST, Route::Vendor(Call::CreateAudience)),
        "/audience/update" => only(Method::POST, Route::Vendor(Call::UpdateAudience)),
        "/audience/activate" => only(Method::POST, Route::Vendor(Call::ActivateAudience)),
        "/audience/delete" => only(Method::DELETE, Route::Vendor(Call::DeleteAudience)),
        "/campaign/createcampaign" => only(Method::POST, Route::Vendor(Call::CreateCampaign)),
        "/organisation/loadplatformaccounts" => {
            only(Method::GET, Route::Vendor(Call::LoadPlatformAccounts))
        }
        "/__sim/stats" => only(Method::GET, Route::Admin(Admin::Stats)),
        "/__sim/faults" if *method == Method::GET => Route::Admin(Admin::Faults),
        "/__sim/faults" => only(Method::POST, Route::Admin(Admin::SetFaults)),
        "/__sim/style" if *method == Method::GET => Route::Admin(Admin::Style),
        "/__sim/style" => only(Method::POST, Route::Admin(Admin::SetStyle)),
        "/__sim/sessions/expire" => only(Method::POST, Route::Admin(Admin::ExpireSessions)),
        _ => match path
            .strip_prefix("/audience/loadaudiencebyid/")
            .map(str::parse::<i64>)
        {
            // Like the vendor's `{audienceId:int}` route constraint: a non-integer id is no route.
            Some(Ok(id)) => only(Method::GET, Route::Vendor(Call::LoadAudience(id))),
            _ => Route::NotFound,
        },
    }
}

/// The single entry point: routing, fault injection, session check, then the call.
pub(crate) async fn dispatch(
    req: HttpRequest,
    body: web::Bytes,
    sim: web::Data<Shared>,
) -> HttpResponse {
    let lowered = req.path().to_ascii_lowercase();
    let path = match lowered.trim_end_matches('/') {
        "" => "/",
        trimmed => trimmed,
    };
    let call = match route(req.method(), path) {
        Route::Vendor(call) => call,
        Route::Admin(admin) => return handle_admin(admin, &body, &sim),
        Route::LoginPage => return html(StatusCode::OK, HTML_LOGIN_PAGE),
        Route::NotFound => return html(StatusCode::NOT_FOUND, HTML_NOT_FOUND),
        Route::MethodNotAllowed => {
            return html(StatusCode::METHOD_NOT_ALLOWED, HTML_METHOD_NOT_ALLOWED)
        }
    };
    sim.count(call.operation());
    if call != Call::Login {
        sim.record_headers(header_list(&req));
    }
    let style = sim.vendor_style();
    // Behind App Service's load balancer, a caller without affinity lands on the next
    // instance and is pinned to it by the answer.
    let (instance, pinned) = match style.app_service {
        true => match azure::instance_of(&req) {
            Some(instance) => (instance, true),
            None => (sim.next_instance(), false),
        },
        false => (Instance::default(), true),
    };
    let mut response = vendor_answer(call, &req, &body, &sim, style, instance).await;
    if !pinned {
        azure::pin(&mut response, instance);
    }
    response
}

/// Fault injection, the session check, model binding, then the call and its answer.
async fn vendor_answer(
    call: Call,
    req: &HttpRequest,
    body: &[u8],
    sim: &Shared,
    style: VendorStyle,
    instance: Instance,
) -> HttpResponse {
    if sim.is_down() {
        if style.app_service {
            return azure::unavailable(HTML_UNAVAILABLE, Utc::now());
        }
        return html(StatusCode::SERVICE_UNAVAILABLE, HTML_UNAVAILABLE);
    }
    let latency = sim.latency();
    if !latency.is_zero() {
        actix_rt::time::sleep(latency).await;
    }
    if sim.roll_error() {
        return html(StatusCode::INTERNAL_SERVER_ERROR, HTML_SERVER_ERROR);
    }
    let session = session_cookie(req);
    if call != Call::Login && !session.is_some_and(|token| sim.session_is_live(token, instance)) {
        return session_rejected(sim.expiry_style(), req);
    }
    // Model binding runs before the vendor's code, as in ASP.NET; the contract style has
    // none of its own (serde's parse below refuses what does not fit).
    if style.strict || style.problem_details {
        let content_type = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|value| value.to_str().ok());
        if let Err(errors) = strict::bind(call, content_type, body, style.strict) {
            return problem::validation(&errors);
        }
    }
    match vendor_call(call, body, sim, style, instance) {
        Ok(reply) => {
            sim.count_carried_out(call.operation());
            if style.app_service {
                let renewed = session
                    .filter(|_| call != Call::Login)
                    .and_then(|t| sim.slide(t));
                return azure::success(reply, renewed);
            }
            answer(reply, style)
        }
        Err(Rejection::NotFound(_))
            if style.app_service && matches!(call, Call::LoadAudience(_)) =>
        {
            let Call::LoadAudience(id) = call else {
                unreachable!("matched above")
            };
            azure::no_audience(id)
        }
        Err(rejection) if style.problem_details => problem::rejection(&rejection),
        Err(rejection) if style.loose_data => HttpResponse::Ok().json(loose::failure(&rejection)),
        Err(rejection) => failure(&rejection),
    }
}

/// Puts a successful call's result into the vendor style's shape.
fn answer(reply: Reply, style: VendorStyle) -> HttpResponse {
    let mut response = HttpResponse::Ok();
    if let Reply::LoggedIn(token) = &reply {
        response.insert_header((
            header::SET_COOKIE,
            format!("{SESSION_COOKIE}={token}; Path=/; HttpOnly"),
        ));
    }
    if style.loose_data {
        return response.json(loose::success(&reply));
    }
    match reply {
        Reply::LoggedIn(_) | Reply::Deleted => response.json(Envelope::ok(true)),
        Reply::Audience(audience) | Reply::Updated(audience) => {
            response.json(Envelope::ok(audience))
        }
        Reply::Activated(activation) => response.json(Envelope::ok(activation)),
        Reply::Campaign(campaign) => response.json(Envelope::ok(campaign)),
        Reply::Accounts(accounts) => response.json(Envelope::ok(accounts)),
    }
}

fn vendor_call(
    call: Call,
    body: &[u8],
    sim: &Shared,
    style: VendorStyle,
    instance: Instance,
) -> Result<Reply, Rejection> {
    let now = Utc::now();
    match call {
        Call::Login => login(body, sim, instance),
        Call::CreateAudience => {
            let request: CreateAudienceRequest = parse(body)?;
            let first_id = if style.app_service {
                azure::FIRST_WIDE_ID
            } else {
                0
            };
            let audience = lock(&sim.store).create_audience(
                &request.name,
                request.description,
                request.campaign_id,
                first_id,
                now,
            )?;
            Ok(Reply::Audience(audience))
        }
        Call::UpdateAudience => {
            let request: UpdateAudienceRequest = parse(body)?;
            let audience = lock(&sim.store).update_audience(
                request.id,
                &request.name,
                request.description,
                now,
            )?;
            Ok(Reply::Updated(audience))
        }
        Call::ActivateAudience => {
            let request: ActivateRequest = parse(body)?;
            let order = ActivationOrder {
                audience_id: request.audience_id,
                account_id: request.account_id,
                name: &request.name,
                start: parse_date("startDate", &request.start_date)
                    .map_err(|message| Rejection::invalid("StartDate", message))?,
                end: parse_date("endDate", &request.end_date)
                    .map_err(|message| Rejection::invalid("EndDate", message))?,
            };
            Ok(Reply::Activated(lock(&sim.store).activate(order, now)?))
        }
        Call::LoadAudience(id) => Ok(Reply::Audience(lock(&sim.store).load_audience(id)?)),
        Call::DeleteAudience => {
            let request: DeleteRequest = parse(body)?;
            lock(&sim.store).delete_audience(request.id)?;
            Ok(Reply::Deleted)
        }
        Call::CreateCampaign => {
            let request: CreateCampaignRequest = parse(body)?;
            Ok(Reply::Campaign(
                lock(&sim.store).create_campaign(&request.name, now)?,
            ))
        }
        Call::LoadPlatformAccounts => Ok(Reply::Accounts(
            lock(&sim.store).platform_accounts().to_vec(),
        )),
    }
}

fn login(body: &[u8], sim: &Shared, instance: Instance) -> Result<Reply, Rejection> {
    let request: LoginRequest = parse(body)?;
    if request.user_name != sim.username || request.password != sim.password {
        return Err(Rejection::BadCredentials);
    }
    Ok(Reply::LoggedIn(sim.open_session(instance)))
}

/// The value of the `digitalAudience` cookie, from any `Cookie` header.
fn session_cookie(req: &HttpRequest) -> Option<&str> {
    req.headers()
        .get_all(header::COOKIE)
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == SESSION_COOKIE)
        .map(|(_, value)| value)
}

/// Answers a call without a live session in the configured style.
fn session_rejected(style: ExpiryStyle, req: &HttpRequest) -> HttpResponse {
    match style {
        ExpiryStyle::LoginPage => html(StatusCode::OK, HTML_LOGIN_PAGE),
        ExpiryStyle::Envelope => HttpResponse::Ok().json(Envelope::<()> {
            data: None,
            status: EnvelopeStatus {
                status_code: 401,
                message: Some("Session expired".to_owned()),
            },
            success: false,
        }),
        ExpiryStyle::Unauthorized => HttpResponse::Unauthorized().finish(),
        ExpiryStyle::Forbidden => HttpResponse::Forbidden().finish(),
        ExpiryStyle::Redirect => {
            let target = req
                .uri()
                .path_and_query()
                .map_or_else(|| req.path(), |pq| pq.as_str());
            HttpResponse::Found()
                .insert_header((
                    header::LOCATION,
                    format!("/account/login?ReturnUrl={}", percent_encode(target)),
                ))
                .finish()
        }
    }
}

fn percent_encode(text: &str) -> String {
    text.bytes()
        .map(|byte| match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                char::from(byte).to_string()
            }
            _ => format!("%{byte:02X}"),
        })
        .collect()
}

fn header_list(req: &HttpRequest) -> Vec<(String, String)> {
    req.headers()
        .iter()
        .map(|(name, value)| {
            (
                name.as_str().to_owned(),
                String::from_utf8_lossy(value.as_bytes()).into_owned(),
            )
        })
        .collect()
}

/// The vendor's envelope.
#[derive(Serialize)]
struct Envelope<T> {
    data: Option<T>,
    status: EnvelopeStatus,
    success: bool,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct EnvelopeStatus {
    status_code: i32,
    message: Option<String>,
}

impl<T> Envelope<T> {
    fn ok(data: T) -> Self {
        Envelope {
            data: Some(data),
            status: EnvelopeStatus {
                status_code: 0,
                message: None,
            },
            success: true,
        }
    }
}

fn failure(rejection: &Rejection) -> HttpResponse {
    HttpResponse::Ok().json(Envelope::<()> {
        data: None,
        status: EnvelopeStatus {
            status_code: rejection.status_code(),
            message: Some(rejection.message().to_owned()),
        },
        success: false,
    })
}

fn html(status: StatusCode, body: &'static str) -> HttpResponse {
    HttpResponse::build(status)
        .content_type("text/html; charset=utf-8")
        .body(body)
}

/// Parses a JSON body; malformed JSON, wrong types and missing fields are validation failures.
fn parse<T: DeserializeOwned>(body: &[u8]) -> Result<T, Rejection> {
    serde_json::from_slice(body)
        .map_err(|error| Rejection::invalid("$", format!("Invalid request body: {error}")))
}

/// ISO 8601 date-time: RFC 3339, or without offset (taken as UTC), as ASP.NET accepts both.
fn parse_date(field: &str, text: &str) -> Result<DateTime<Utc>, String> {
    DateTime::parse_from_rfc3339(text)
        .map(|at| at.with_timezone(&Utc))
        .or_else(|_| {
            NaiveDateTime::parse_from_str(text, "%Y-%m-%dT%H:%M:%S%.f").map(|at| at.and_utc())
        })
        .map_err(|_| format!("{field} is not a valid ISO 8601 date-time: '{text}'"))
}

/// An integer, also accepted as a numeric string (the reference's own example quotes ids,
/// and ASP.NET's web JSON defaults read numbers from strings).
fn integer<'de, D: Deserializer<'de>>(deserializer: D) -> Result<i64, D::Error> {
    match Value::deserialize(deserializer)? {
        Value::Number(number) => number
            .as_i64()
            .ok_or_else(|| D::Error::custom(format!("{number} is not an integer"))),
        Value::String(text) => text
            .trim()
            .parse()
            .map_err(|_| D::Error::custom(format!("'{text}' is not an integer"))),
        other => Err(D::Error::custom(format!(
            "expected an integer, found {other}"
        ))),
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct LoginRequest {
    user_name: String,
    password: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct CreateAudienceRequest {
    name: String,
    description: Option<String>,
    #[serde(deserialize_with = "integer")]
    campaign_id: i64,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct UpdateAudienceRequest {
    #[serde(deserialize_with = "integer")]
    id: i64,
    name: String,
    description: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ActivateRequest {
    #[serde(deserialize_with = "integer")]
    audience_id: i64,
    #[serde(deserialize_with = "integer")]
    account_id: i64,
    name: String,
    start_date: String,
    end_date: String,
}

#[derive(Deserialize)]
struct DeleteRequest {
    #[serde(deserialize_with = "integer")]
    id: i64,
}

#[derive(Deserialize)]
struct CreateCampaignRequest {
    name: String,
}

/// `POST /__sim/faults` body: every knob is optional, absent ones keep their value.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct FaultsRequest {
    latency_ms: Option<u64>,
    error_rate: Option<f64>,
    down: Option<bool>,
}

/// `POST /__sim/style` body: absent styles keep their value; names as their `FromStr` takes.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct StyleRequest {
    expiry_style: Option<String>,
    vendor_style: Option<String>,
}

fn handle_admin(admin: Admin, body: &[u8], sim: &Shared) -> HttpResponse {
    match admin {
        Admin::Stats => {
            let calls: serde_json::Map<String, Value> = Operation::ALL
                .iter()
                .map(|op| (op.name().to_owned(), json!(sim.call_count(*op))))
                .collect();
            let writes: serde_json::Map<String, Value> = Operation::ALL
                .iter()
                .filter(|op| op.is_write())
                .map(|op| (op.name().to_owned(), json!(sim.write_count(*op))))
                .collect();
            HttpResponse::Ok().json(json!({
                "logins": sim.call_count(Operation::Login),
                "calls": calls,
                "writes": writes,
            }))
        }
        Admin::Faults => faults(sim),
        Admin::SetFaults => {
            let request: FaultsRequest = match serde_json::from_slice(body) {
                Ok(request) => request,
                Err(error) => {
                    return HttpResponse::BadRequest().json(json!({"error": error.to_string()}))
                }
            };
            if let Some(rate) = request.error_rate {
                if !(0.0..=1.0).contains(&rate) {
                    return HttpResponse::BadRequest()
                        .json(json!({"error": "errorRate must be within 0.0-1.0"}));
                }
                sim.set_error_rate(rate);
            }
            if let Some(ms) = request.latency_ms {
                sim.set_latency(std::time::Duration::from_millis(ms));
            }
            if let Some(down) = request.down {
                sim.set_down(down);
            }
            faults(sim)
        }
        Admin::Style => styles(sim),
        Admin::SetStyle => {
            let parsed = serde_json::from_slice::<StyleRequest>(body)
                .map_err(|error| error.to_string())
                .and_then(|request| {
                    let expiry = request
                        .expiry_style
                        .as_deref()
                        .map(str::parse)
                        .transpose()?;
                    let vendor = request
                        .vendor_style
                        .as_deref()
                        .map(str::parse)
                        .transpose()?;
                    Ok((expiry, vendor))
                });
            match parsed {
                Ok((expiry, vendor)) => {
                    if let Some(style) = expiry {
                        sim.set_expiry_style(style);
                    }
                    if let Some(style) = vendor {
                        sim.set_vendor_style(style);
                    }
                    styles(sim)
                }
                Err(error) => HttpResponse::BadRequest().json(json!({"error": error})),
            }
        }
        Admin::ExpireSessions => {
            sim.expire_sessions();
            HttpResponse::NoContent().finish()
        }
    }
}

fn styles(sim: &Shared) -> HttpResponse {
    HttpResponse::Ok().json(json!({
        "expiryStyle": sim.expiry_style().name(),
        "vendorStyle": sim.vendor_style().to_string(),
    }))
}

fn faults(sim: &Shared) -> HttpResponse {
    let latency_ms = u64::try_from(sim.latency().as_millis()).unwrap_or(u64::MAX);
    HttpResponse::Ok().json(
        json!({"latencyMs": latency_ms, "errorRate": sim.error_rate(), "down": sim.is_down()}),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_ignore_case_only_after_lowering() {
        assert!(matches!(
            route(&Method::GET, "/audience/loadaudiencebyid/1001"),
            Route::Vendor(Call::LoadAudience(1001))
        ));
        assert!(matches!(
            route(&Method::GET, "/audience/loadaudiencebyid/abc"),
            Route::NotFound
        ));
        assert!(matches!(
            route(&Method::GET, "/audience/update"),
            Route::MethodNotAllowed
        ));
        assert!(matches!(
            route(&Method::GET, "/account/login"),
            Route::LoginPage
        ));
    }

    #[test]
    fn integers_may_be_quoted() {
        let request: DeleteRequest =
            serde_json::from_str(r#"{"id": "1001"}"#).expect("numeric string");
        assert_eq!(request.id, 1001);
        assert!(serde_json::from_str::<DeleteRequest>(r#"{"id": "abc"}"#).is_err());
        assert!(serde_json::from_str::<DeleteRequest>(r#"{"id": 1.5}"#).is_err());
        assert!(serde_json::from_str::<DeleteRequest>(r#"{"id": true}"#).is_err());
    }

    #[test]
    fn dates_accept_offsets_and_naive_utc() {
        let expected = parse_date("startDate", "2024-01-01T00:00:00Z").expect("rfc 3339");
        assert_eq!(
            parse_date("startDate", "2024-01-01T01:00:00+01:00"),
            Ok(expected)
        );
        assert_eq!(parse_date("startDate", "2024-01-01T00:00:00"), Ok(expected));
        assert!(parse_date("startDate", "next tuesday").is_err());
    }

    #[test]
    fn return_url_is_percent_encoded() {
        assert_eq!(
            percent_encode("/audience/loadAudienceById/1?x=1"),
            "%2Faudience%2FloadAudienceById%2F1%3Fx%3D1"
        );
    }
}
