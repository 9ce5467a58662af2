//! Everything the gateway knows about the vendor's wire format: paths, request bodies, the
//! envelope, refusals and the response DTOs, and their conversion to the public types. The
//! contract, and every assumption made where the vendor's page is silent, is written down in
//! docs/UPSTREAM.md; a correction to it is a change in this module only.
//!
//! Reading is tolerant wherever that is safe ([`lenient`]): unknown fields are ignored,
//! `null` stands for "absent" wherever a value is optional or has a default, ids may come as
//! quoted numbers, and `data` is not read at all where the gateway does not need it.

mod lenient;

use std::collections::BTreeMap;

use serde::de::{DeserializeOwned, IgnoredAny};
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::value::RawValue;
use serde_json::Value;

use crate::domain::{
    Activation, Audience, Campaign, IdentifierStats, Insights, PlatformAccount, UploadEvent,
    Uploads,
};

/// Name of the vendor's session cookie.
pub const SESSION_COOKIE: &str = "digitalAudience";

/// One vendor operation: its method, path and whether repeating it is harmless.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Operation {
    Login,
    CreateCampaign,
    LoadPlatformAccounts,
    CreateAudience,
    LoadAudience,
    UpdateAudience,
    DeleteAudience,
    ActivateAudience,
}

impl Operation {
    /// Every operation, for metrics registration.
    pub const ALL: [Operation; 8] = [
        Operation::Login,
        Operation::CreateCampaign,
        Operation::LoadPlatformAccounts,
        Operation::CreateAudience,
        Operation::LoadAudience,
        Operation::UpdateAudience,
        Operation::DeleteAudience,
        Operation::ActivateAudience,
    ];

    /// Stable name used in logs and metric labels.
    pub fn name(self) -> &'static str {
        match self {
            Operation::Login => "login",
            Operation::CreateCampaign => "createCampaign",
            Operation::LoadPlatformAccounts => "loadPlatformAccounts",
            Operation::CreateAudience => "createAudience",
            Operation::LoadAudience => "loadAudience",
            Operation::UpdateAudience => "updateAudience",
            Operation::DeleteAudience => "deleteAudience",
            Operation::ActivateAudience => "activateAudience",
        }
    }

    /// HTTP method of the vendor call.
    pub fn method(self) -> reqwest::Method {
        match self {
            Operation::LoadPlatformAccounts | Operation::LoadAudience => reqwest::Method::GET,
            Operation::DeleteAudience => reqwest::Method::DELETE,
            _ => reqwest::Method::POST,
        }
    }

    /// Path of the vendor call (relative to the base URL).
    pub fn path(self, id: Option<i64>) -> String {
        match self {
            Operation::Login => "/account/login".into(),
            Operation::CreateCampaign => "/campaign/createcampaign".into(),
            Operation::LoadPlatformAccounts => "/organisation/loadplatformaccounts".into(),
            Operation::CreateAudience => "/audience/createcrmaudience".into(),
            Operation::LoadAudience => format!("/audience/loadAudienceById/{}", id.unwrap_or(0)),
            Operation::UpdateAudience => "/audience/update".into(),
            Operation::DeleteAudience => "/audience/delete".into(),
            Operation::ActivateAudience => "/audience/activate".into(),
        }
    }

    /// Whether the call may be repeated after a failure that happened after sending.
    pub fn is_safe(self) -> bool {
        matches!(
            self,
            Operation::Login | Operation::LoadAudience | Operation::LoadPlatformAccounts
        )
    }
}

/// `POST /account/login` body.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LoginBody<'a> {
    pub user_name: &'a str,
    pub password: &'a str,
}

/// `POST /campaign/createcampaign` body.
#[derive(Serialize)]
pub struct CreateCampaignBody<'a> {
    pub name: &'a str,
}

/// `POST /audience/createcrmaudience` body.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CreateAudienceBody<'a> {
    pub name: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<&'a str>,
    pub campaign_id: i64,
}

/// `POST /audience/update` body.
#[derive(Serialize)]
pub struct UpdateAudienceBody<'a> {
    pub id: i64,
    pub name: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<&'a str>,
}

/// `DELETE /audience/delete` body (assumed; the reference shows none).
#[derive(Serialize)]
pub struct DeleteAudienceBody {
    pub id: i64,
}

/// `POST /audience/activate` body.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ActivateBody<'a> {
    pub audience_id: i64,
    pub account_id: i64,
    pub name: &'a str,
    pub description: &'a str,
    pub start_date: &'a str,
    pub end_date: &'a str,
}

/// What a vendor answer's `data` is read into. The envelope is the same for every call; what
/// `data` must hold, and what its absence means, depends on the call.
pub trait Payload: DeserializeOwned {
    /// The payload when `data` is absent or `null`; `None` makes the answer unreadable.
    fn absent() -> Option<Self> {
        None
    }

    /// Completes the payload from the whole body, for values the vendor may send beside
    /// `data` instead of inside it.
    fn complete(self, _body: &[u8]) -> Result<Self, String> {
        Ok(self)
    }
}

/// `data` the gateway does not need (login, delete): any shape, or none, is accepted;
/// success is the envelope's and the HTTP status's.
impl Payload for IgnoredAny {
    fn absent() -> Option<Self> {
        Some(IgnoredAny)
    }
}

/// The vendor's envelope around every response.
#[derive(Deserialize)]
struct Envelope<T> {
    data: Option<T>,
    #[serde(default, deserialize_with = "lenient::or_default")]
    status: EnvelopeStatus,
    #[serde(default, deserialize_with = "lenient::opt_bool")]
    success: Option<bool>,
}

/// The envelope without its `data`, which serde skips without building anything.
#[derive(Deserialize)]
struct EnvelopeHead {
    #[serde(default, deserialize_with = "lenient::or_default")]
    status: EnvelopeStatus,
    #[serde(default, deserialize_with = "lenient::opt_bool")]
    success: Option<bool>,
}

/// `status` of the envelope.
#[derive(Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct EnvelopeStatus {
    #[serde(default, deserialize_with = "lenient::opt_i64")]
    status_code: Option<i64>,
    #[serde(default, deserialize_with = "lenient::opt_text")]
    message: Option<String>,
}

/// What an envelope says, once decoded.
#[derive(Debug)]
pub enum Decoded<T> {
    Ok(T),
    /// The vendor says the call failed (`success: false`), even on HTTP 200.
    Failed {
        status_code: i64,
        message: Option<String>,
    },
    /// Not JSON, not the envelope shape, or `data` that cannot be read: the reason, with the
    /// path of the value at fault (e.g. `data.crmData.size: invalid type: ...`).
    Malformed(String),
}

/// The failure an envelope reports, if any. `success` decides: the vendor's page defines
/// `success: true` as success and says only that a `statusCode` of 0 "typically" means
/// success, so a non-zero code beside `success: true` is informational. Without `success`,
/// the status code decides (0 is success).
fn failure_of(
    status: EnvelopeStatus,
    success: Option<bool>,
) -> Result<Option<(i64, Option<String>)>, String> {
    let ok = match (success, status.status_code) {
        (Some(ok), _) => ok,
        (None, Some(code)) => code == 0,
        (None, None) => {
            return Err("not an envelope: neither `success` nor `status.statusCode`".into())
        }
    };
    if ok {
        return Ok(None);
    }
    let code = status.status_code.filter(|c| *c != 0).unwrap_or(-1);
    Ok(Some((code, status.message)))
}

/// Decodes an envelope body.
///
/// One pass straight into `T` (no intermediate `serde_json::Value`); only when that fails
/// is the body read again: without `data`, to tell a refusal from a malformed answer, and
/// then with path tracking, to say which value could not be read.
pub fn decode<T: Payload>(body: &[u8]) -> Decoded<T> {
    match serde_json::from_slice::<Envelope<T>>(body) {
        Ok(env) => match failure_of(env.status, env.success) {
            Err(why) => Decoded::Malformed(why),
            Ok(Some((status_code, message))) => Decoded::Failed {
                status_code,
                message,
            },
            Ok(None) => match env.data.or_else(T::absent) {
                Some(data) => data
                    .complete(body)
                    .map_or_else(Decoded::Malformed, Decoded::Ok),
                None => Decoded::Malformed("envelope without `data`".into()),
            },
        },
        Err(e) => match serde_json::from_slice::<EnvelopeHead>(body) {
            Err(_) => Decoded::Malformed(format!("not an envelope: {e}")),
            Ok(head) => match failure_of(head.status, head.success) {
                Err(why) => Decoded::Malformed(why),
                Ok(Some((status_code, message))) => Decoded::Failed {
                    status_code,
                    message,
                },
                Ok(None) => Decoded::Malformed(unreadable_path::<Envelope<T>>(body, &e)),
            },
        },
    }
}

/// `path: error` of the first value of `body` that `T` cannot read.
fn unreadable_path<T: DeserializeOwned>(body: &[u8], fallback: &serde_json::Error) -> String {
    let mut de = serde_json::Deserializer::from_slice(body);
    match serde_path_to_error::deserialize::<_, T>(&mut de) {
        Err(e) => format!("{}: {}", e.path(), e.inner()),
        Ok(_) => fallback.to_string(),
    }
}

/// Whether a 2xx body is not JSON at all (an HTML login page, say): what a session that
/// expired looks like on a backend that answers with its login form instead of 401/302.
pub fn is_not_json(content_type: Option<&str>, body: &[u8]) -> bool {
    let html = content_type.is_some_and(|t| t.to_ascii_lowercase().contains("html"));
    let first = body.iter().find(|b| !b.is_ascii_whitespace());
    html || matches!(first, Some(b) if *b != b'{' && *b != b'[')
}

/// Envelope status codes the gateway interprets (docs/UPSTREAM.md).
pub mod status_codes {
    /// The entity does not exist.
    pub const NOT_FOUND: i64 = 404;
    /// The session is missing or expired.
    pub const UNAUTHORIZED: i64 = 401;
    /// The session may not do this.
    pub const FORBIDDEN: i64 = 403;
}

/// Longest vendor message passed on to a caller.
const MAX_MESSAGE_CHARS: usize = 300;
/// Longest vendor field name passed on to a caller.
const MAX_FIELD_CHARS: usize = 64;

/// What the vendor said when it refused a request: the field it named, if any, and its
/// message, both sanitised (no control characters, bounded length) for a caller to read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub field: Option<String>,
    pub message: String,
}

impl Refusal {
    /// A refusal carrying only a message (an envelope's `status.message`, say).
    pub fn message(text: &str) -> Self {
        Refusal {
            field: None,
            message: sanitize(text),
        }
    }

    /// Reads a refusal body: an ASP.NET ProblemDetails (`title`, `detail`, `errors: {Field:
    /// [messages]}`), an envelope with `status.message`, a JSON object with `message`, or
    /// plain text. HTML and unreadable bodies name nothing; `fallback` is the message then.
    pub fn of_body(content_type: Option<&str>, body: &[u8], fallback: &str) -> Self {
        let named = match serde_json::from_slice::<Value>(body) {
            Ok(v) => Self::of_json(&v),
            Err(_) if is_not_json(content_type, body) && !looks_like_html(content_type, body) => {
                std::str::from_utf8(body).ok().map(Refusal::message)
            }
            Err(_) => None,
        };
        named
            .filter(|r| !r.message.is_empty())
            .unwrap_or_else(|| Refusal::message(fallback))
    }

    fn of_json(v: &Value) -> Option<Self> {
        let text = |key: &str| v.get(key).and_then(Value::as_str).map(str::to_owned);
        // ProblemDetails `errors`: the first field and its first message.
        let error = v.get("errors").and_then(Value::as_object).and_then(|m| {
            m.iter().find_map(|(field, msgs)| {
                let msg = match msgs {
                    Value::Array(a) => a.iter().find_map(Value::as_str),
                    Value::String(s) => Some(s.as_str()),
                    _ => None,
                }?;
                Some((field_name(field), msg.to_owned()))
            })
        });
        let envelope_message = v
            .get("status")
            .and_then(|s| s.get("message"))
            .and_then(Value::as_str)
            .map(str::to_owned);
        let (field, message) = match error {
            Some((field, msg)) => (field, Some(msg)),
            None => (
                None,
                text("detail")
                    .or(envelope_message)
                    .or_else(|| text("message"))
                    .or_else(|| text("Message"))
                    .or_else(|| text("title"))
                    .or_else(|| text("error")),
            ),
        };
        Some(Refusal {
            field,
            message: sanitize(&message?),
        })
    }
}

fn looks_like_html(content_type: Option<&str>, body: &[u8]) -> bool {
    content_type.is_some_and(|t| t.to_ascii_lowercase().contains("html"))
        || body.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'<')
}

/// Control characters become spaces, runs of whitespace one space; at most
/// [`MAX_MESSAGE_CHARS`] characters.
fn sanitize(text: &str) -> String {
    let mut out = String::with_capacity(text.len().min(MAX_MESSAGE_CHARS));
    let mut chars = 0;
    for word in text.split(|c: char| c.is_whitespace() || c.is_control()) {
        if word.is_empty() {
            continue;
        }
        for c in (!out.is_empty())
            .then_some(' ')
            .into_iter()
            .chain(word.chars())
        {
            if chars == MAX_MESSAGE_CHARS {
                out.push('…');
                return out;
            }
            out.push(c);
            chars += 1;
        }
    }
    out
}

/// The vendor's name of a request field, as our API spells it: `AccountId` and
/// `$.accountId` are `accountId`. Anything that is not a plain field path names nothing.
fn field_name(raw: &str) -> Option<String> {
    let name = raw.trim().trim_start_matches('$').trim_start_matches('.');
    let ok = !name.is_empty()
        && name.chars().count() <= MAX_FIELD_CHARS
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '[' | ']'));
    if !ok {
        return None;
    }
    let mut chars = name.chars();
    let first = chars.next()?.to_ascii_lowercase();
    Some(std::iter::once(first).chain(chars).collect())
}

/// The vendor's audience object. Unknown fields are ignored, unknown enum values kept.
///
/// `C` is what `crmData` is read into: [`Crm`] for insights and uploads, or
/// [`IgnoredAny`] for a read that needs only the audience itself (the upload history, most
/// of the answer, is then skipped without building anything).
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AudienceDto<C = Crm> {
    #[serde(deserialize_with = "lenient::i64_required")]
    pub id: i64,
    #[serde(default, deserialize_with = "lenient::opt_text")]
    pub name: Option<String>,
    #[serde(default, deserialize_with = "lenient::opt_text")]
    pub description: Option<String>,
    #[serde(default, deserialize_with = "lenient::opt_i64")]
    pub user_id: Option<i64>,
    #[serde(default, deserialize_with = "lenient::opt_i64")]
    pub campaign_id: Option<i64>,
    #[serde(default, deserialize_with = "lenient::opt_text")]
    pub campaign_name: Option<String>,
    #[serde(default, deserialize_with = "lenient::opt_text")]
    pub created: Option<String>,
    #[serde(default, deserialize_with = "lenient::opt_text")]
    pub updated: Option<String>,
    #[serde(default, deserialize_with = "lenient::opt_text")]
    pub start_date: Option<String>,
    #[serde(default, deserialize_with = "lenient::opt_text")]
    pub end_date: Option<String>,
    #[serde(default, deserialize_with = "lenient::opt_text")]
    pub data_updated: Option<String>,
    #[serde(default, deserialize_with = "lenient::opt_text")]
    pub activation_status: Option<String>,
    #[serde(default, deserialize_with = "lenient::opt_i64")]
    pub activation_status_id: Option<i64>,
    #[serde(default, deserialize_with = "lenient::opt_text")]
    pub lifetime_status: Option<String>,
    #[serde(default, deserialize_with = "lenient::opt_i64")]
    pub lifetime_status_id: Option<i64>,
    #[serde(default, deserialize_with = "lenient::opt_text")]
    pub audience_state: Option<String>,
    #[serde(default, deserialize_with = "lenient::opt_i64")]
    pub audience_state_id: Option<i64>,
    #[serde(default, rename = "type", deserialize_with = "lenient::opt_text")]
    pub audience_type: Option<String>,
    #[serde(default, deserialize_with = "lenient::opt_i64")]
    pub type_id: Option<i64>,
    #[serde(default, deserialize_with = "lenient::opt_i64")]
    pub source_audience_id: Option<i64>,
    #[serde(default, deserialize_with = "lenient::opt_i64")]
    pub source_audience_type_id: Option<i64>,
    #[serde(default, deserialize_with = "lenient::opt_bool")]
    pub can_create_lookalike: Option<bool>,
    #[serde(default, deserialize_with = "lenient::opt_bool")]
    pub has_segments: Option<bool>,
    /// Opaque: passed through as the vendor sent it.
    #[serde(default)]
    pub tag_collection: Option<Value>,
    pub crm_data: Option<C>,
}

impl<C: DeserializeOwned> Payload for AudienceDto<C> {}

/// `crmData` as read: its content, or why it could not be read. A `crmData` the gateway
/// cannot read never fails the audience itself; only insights and uploads need it.
#[derive(Debug, Clone)]
pub enum Crm {
    Read(CrmDataDto),
    Unreadable(String),
}

impl<'de> Deserialize<'de> for Crm {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        // Held as raw text so that a value inside it that cannot be read leaves the rest of
        // the audience readable.
        let raw = Box::<RawValue>::deserialize(d)?;
        Ok(match serde_json::from_str::<CrmDataDto>(raw.get()) {
            Ok(crm) => Crm::Read(crm),
            Err(e) => Crm::Unreadable(format!(
                "crmData.{}",
                unreadable_path::<CrmDataDto>(raw.get().as_bytes(), &e)
            )),
        })
    }
}

/// `crmData` of an audience.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CrmDataDto {
    #[serde(default, deserialize_with = "lenient::opt_text")]
    pub insights_state: Option<String>,
    #[serde(default, deserialize_with = "lenient::opt_count")]
    pub size: Option<u64>,
    #[serde(default, deserialize_with = "lenient::or_default")]
    pub history: CrmHistoryDto,
}

/// `crmData.history`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CrmHistoryDto {
    #[serde(default, deserialize_with = "lenient::opt_count")]
    pub total_events: Option<u64>,
    /// Upload events by their upload date (a date, or a timestamp with or without offset).
    #[serde(default, deserialize_with = "lenient::map")]
    pub history: BTreeMap<String, UploadEventDto>,
}

/// One upload event of `crmData.history.history`.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UploadEventDto {
    #[serde(default, deserialize_with = "lenient::opt_text")]
    pub mode: Option<String>,
    #[serde(default, deserialize_with = "lenient::count")]
    pub total_rows: u64,
    #[serde(default, deserialize_with = "lenient::opt_text")]
    pub created: Option<String>,
    #[serde(default, deserialize_with = "lenient::map")]
    pub data_set: BTreeMap<String, DataSetCountsDto>,
    #[serde(default, deserialize_with = "lenient::map")]
    pub match_rates: BTreeMap<String, Rate>,
}

/// A match rate, 0.0-1.0; `null` or absent when the vendor has none.
#[derive(Debug, Clone, Copy, Deserialize)]
pub struct Rate(#[serde(deserialize_with = "lenient::opt_f64")] pub Option<f64>);

/// Counts per identifier type; a `null` count is 0.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub struct DataSetCountsDto {
    #[serde(default, deserialize_with = "lenient::count")]
    pub total: u64,
    #[serde(default, deserialize_with = "lenient::count")]
    pub unique: u64,
    #[serde(default, rename = "MATCH", deserialize_with = "lenient::count")]
    pub matched: u64,
    #[serde(default, rename = "UMATCH", deserialize_with = "lenient::count")]
    pub usable_matched: u64,
    #[serde(default, rename = "NOMATCH", deserialize_with = "lenient::count")]
    pub unmatched: u64,
}

/// The vendor's campaign (assumed `{id, name, ...}`).
#[derive(Debug, Clone, Deserialize)]
pub struct CampaignDto {
    #[serde(deserialize_with = "lenient::i64_required")]
    pub id: i64,
    #[serde(default, deserialize_with = "lenient::opt_text")]
    pub name: Option<String>,
    #[serde(default, deserialize_with = "lenient::opt_text")]
    pub created: Option<String>,
}

impl Payload for CampaignDto {}

/// The answer to an update: the vendor's page shows none, so any `data` is accepted, and an
/// audience object in it is kept.
#[derive(Debug)]
pub struct UpdateAnswer(pub Option<AudienceDto<IgnoredAny>>);

impl<'de> Deserialize<'de> for UpdateAnswer {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = Value::deserialize(d)?;
        Ok(UpdateAnswer(
            v.is_object()
                .then(|| serde_json::from_value(v).ok())
                .flatten(),
        ))
    }
}

impl Payload for UpdateAnswer {
    fn absent() -> Option<Self> {
        Some(UpdateAnswer(None))
    }
}

/// The vendor's activation result: `flowId` and `segmentId` under `data`, or beside it.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ActivationDto {
    #[serde(default, deserialize_with = "lenient::opt_text")]
    pub flow_id: Option<String>,
    #[serde(default, deserialize_with = "lenient::opt_i64")]
    pub segment_id: Option<i64>,
}

impl Payload for ActivationDto {
    fn absent() -> Option<Self> {
        Some(ActivationDto::default())
    }

    fn complete(self, body: &[u8]) -> Result<Self, String> {
        if self.flow_id.is_some() && self.segment_id.is_some() {
            return Ok(self);
        }
        let top: ActivationDto =
            serde_json::from_slice(body).map_err(|e| unreadable_path::<ActivationDto>(body, &e))?;
        let done = ActivationDto {
            flow_id: self.flow_id.or(top.flow_id),
            segment_id: self.segment_id.or(top.segment_id),
        };
        match (&done.flow_id, done.segment_id) {
            (Some(_), Some(_)) => Ok(done),
            _ => Err("activation answer without `flowId` and `segmentId`".into()),
        }
    }
}

/// The vendor's platform account. `accessToken` is deliberately not a field: it is never
/// even read into memory, so it cannot be passed on.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PlatformAccountDto {
    #[serde(deserialize_with = "lenient::i64_required")]
    pub id: i64,
    #[serde(default, deserialize_with = "lenient::opt_text")]
    pub name: Option<String>,
    #[serde(default, deserialize_with = "lenient::opt_i64")]
    pub platform_id: Option<i64>,
    #[serde(default, deserialize_with = "lenient::opt_text")]
    pub platform_name: Option<String>,
    #[serde(default, deserialize_with = "lenient::opt_text")]
    pub platform_display_name: Option<String>,
    #[serde(default, deserialize_with = "lenient::opt_i64")]
    pub agency_id: Option<i64>,
    #[serde(default, deserialize_with = "lenient::opt_text")]
    pub agency_name: Option<String>,
    #[serde(default, deserialize_with = "lenient::opt_i64")]
    pub account_type_id: Option<i64>,
    #[serde(default, deserialize_with = "lenient::opt_text")]
    pub account_type_name: Option<String>,
    #[serde(default, deserialize_with = "lenient::opt_text")]
    pub advertiser_id: Option<String>,
    #[serde(default, deserialize_with = "lenient::opt_text")]
    pub client_id: Option<String>,
    #[serde(default, deserialize_with = "lenient::opt_i64")]
    pub default_segment_pricing_category_id: Option<i64>,
    #[serde(default, deserialize_with = "lenient::opt_text")]
    pub created: Option<String>,
    #[serde(default, deserialize_with = "lenient::opt_text")]
    pub updated: Option<String>,
}

/// The platform-account list; `null` is an empty list, `null` entries are left out.
#[derive(Debug, Clone, Default)]
pub struct PlatformAccounts(pub Vec<PlatformAccountDto>);

impl<'de> Deserialize<'de> for PlatformAccounts {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let items = Option::<Vec<Option<PlatformAccountDto>>>::deserialize(d)?;
        Ok(PlatformAccounts(
            items.into_iter().flatten().flatten().collect(),
        ))
    }
}

impl Payload for PlatformAccounts {
    fn absent() -> Option<Self> {
        Some(PlatformAccounts::default())
    }
}

impl From<PlatformAccountDto> for PlatformAccount {
    fn from(d: PlatformAccountDto) -> Self {
        PlatformAccount {
            id: d.id,
            name: d.name,
            platform_id: d.platform_id,
            platform_name: d.platform_name,
            platform_display_name: d.platform_display_name,
            agency_id: d.agency_id,
            agency_name: d.agency_name,
            account_type_id: d.account_type_id,
            account_type_name: d.account_type_name,
            advertiser_id: d.advertiser_id,
            client_id: d.client_id,
            default_segment_pricing_category_id: d.default_segment_pricing_category_id,
            created: d.created,
            updated: d.updated,
        }
    }
}

impl From<CampaignDto> for Campaign {
    fn from(d: CampaignDto) -> Self {
        Campaign {
            id: d.id,
            name: d.name.unwrap_or_default(),
            created: d.created,
        }
    }
}

impl ActivationDto {
    /// The public activation result; `complete` guaranteed both ids.
    pub fn into_activation(self, audience_id: i64, account_id: i64) -> Activation {
        Activation {
            audience_id,
            account_id,
            flow_id: self.flow_id.unwrap_or_default(),
            segment_id: self.segment_id.unwrap_or_default(),
        }
    }
}

fn identifiers(event: &UploadEventDto) -> Vec<IdentifierStats> {
    event
        .data_set
        .iter()
        .map(|(kind, c)| IdentifierStats {
            identifier_type: kind.clone(),
            total: c.total,
            unique: c.unique,
            matched: c.matched,
            usable_matched: c.usable_matched,
            unmatched: c.unmatched,
            match_rate: event.match_rates.get(kind).and_then(|r| r.0),
        })
        .collect()
}

impl<C> AudienceDto<C> {
    /// The public audience; takes the vendor object apart instead of copying its strings.
    pub fn into_audience(self) -> Audience {
        Audience {
            id: self.id,
            name: self.name.unwrap_or_default(),
            description: self.description,
            campaign_id: self.campaign_id,
            campaign_name: self.campaign_name,
            user_id: self.user_id,
            audience_type: self.audience_type,
            type_id: self.type_id,
            activation_status: self.activation_status,
            activation_status_id: self.activation_status_id,
            lifetime_status: self.lifetime_status,
            lifetime_status_id: self.lifetime_status_id,
            audience_state: self.audience_state,
            audience_state_id: self.audience_state_id,
            can_create_lookalike: self.can_create_lookalike.unwrap_or(false),
            has_segments: self.has_segments.unwrap_or(false),
            source_audience_id: self.source_audience_id,
            source_audience_type_id: self.source_audience_type_id,
            tag_collection: self.tag_collection,
            start_date: self.start_date,
            end_date: self.end_date,
            created: self.created,
            updated: self.updated,
            data_updated: self.data_updated,
            has_crm_data: self.crm_data.is_some(),
        }
    }
}

/// A part of the vendor's answer that could not be read: the path of the value at fault and
/// why (e.g. `crmData.history.totalEvents: invalid value: ...`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Unreadable(pub String);

impl AudienceDto {
    /// `crmData`: `None` without CRM data, an error when it could not be read.
    fn crm(&self) -> Result<Option<&CrmDataDto>, Unreadable> {
        match &self.crm_data {
            None => Ok(None),
            Some(Crm::Read(c)) => Ok(Some(c)),
            Some(Crm::Unreadable(why)) => Err(Unreadable(why.clone())),
        }
    }

    /// Upload events, newest first (by their upload date key).
    fn events_newest_first(crm: Option<&CrmDataDto>) -> Vec<(&String, &UploadEventDto)> {
        let mut events: Vec<_> = crm.iter().flat_map(|c| c.history.history.iter()).collect();
        events.sort_by(|a, b| sort_key(b.0).cmp(&sort_key(a.0)));
        events
    }

    /// Insights derived from `crmData` (the newest upload gives the per-identifier counts).
    pub fn to_insights(&self) -> Result<Insights, Unreadable> {
        let crm = self.crm()?;
        let events = Self::events_newest_first(crm);
        Ok(Insights {
            audience_id: self.id,
            state: match crm {
                None => "NO_DATA".into(),
                Some(c) => c.insights_state.clone().unwrap_or_else(|| "UNKNOWN".into()),
            },
            size: crm.and_then(|c| c.size).unwrap_or(0),
            uploads: crm
                .and_then(|c| c.history.total_events)
                .unwrap_or(events.len() as u64),
            last_upload: events.first().map(|(d, _)| (*d).clone()),
            identifiers: events
                .first()
                .map(|(_, e)| identifiers(e))
                .unwrap_or_default(),
        })
    }

    /// Upload events derived from `crmData.history`, newest first.
    pub fn to_uploads(&self) -> Result<Uploads, Unreadable> {
        let crm = self.crm()?;
        let events = Self::events_newest_first(crm);
        Ok(Uploads {
            audience_id: self.id,
            total_events: crm
                .and_then(|c| c.history.total_events)
                .unwrap_or(events.len() as u64),
            uploads: events
                .into_iter()
                .map(|(date, e)| UploadEvent {
                    uploaded_at: date.clone(),
                    created: e.created.clone(),
                    mode: e.mode.clone(),
                    total_rows: e.total_rows,
                    identifiers: identifiers(e),
                })
                .collect(),
        })
    }
}

/// Orders upload date keys by time when they parse (RFC 3339, a timestamp without offset
/// taken as UTC, or a date), else as text.
fn sort_key(date: &str) -> (i64, &str) {
    let ts = chrono::DateTime::parse_from_rfc3339(date)
        .map(|d| d.timestamp_micros())
        .or_else(|_| {
            chrono::NaiveDateTime::parse_from_str(date, "%Y-%m-%dT%H:%M:%S%.f")
                .map(|d| d.and_utc().timestamp_micros())
        })
        .or_else(|_| {
            chrono::NaiveDate::parse_from_str(date, "%Y-%m-%d").map(|d| {
                d.and_time(chrono::NaiveTime::MIN)
                    .and_utc()
                    .timestamp_micros()
            })
        })
        .unwrap_or(i64::MIN);
    (ts, date)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A vendor body kept in tests/fixtures/vendor/.
    fn fixture(name: &str) -> Vec<u8> {
        let path = format!(
            "{}/tests/fixtures/vendor/{name}",
            env!("CARGO_MANIFEST_DIR")
        );
        std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
    }

    fn ok<T: Payload + std::fmt::Debug>(name: &str) -> T {
        match decode::<T>(&fixture(name)) {
            Decoded::Ok(v) => v,
            other => panic!("{name}: {other:?}"),
        }
    }

    #[test]
    fn the_vendor_pages_create_example_is_read_whole() {
        let dto: AudienceDto = ok("create-audience.json");
        let a = dto.into_audience();
        assert_eq!(a.id, 69249);
        assert_eq!(a.name, "testfhdfhdfh");
        assert_eq!(a.campaign_id, Some(123));
        assert_eq!(a.activation_status.as_deref(), Some("New"));
        assert_eq!(a.activation_status_id, Some(0));
        assert_eq!(a.audience_state_id, Some(5));
        assert_eq!(a.type_id, Some(0));
        assert_eq!(a.lifetime_status_id, None);
        assert_eq!(a.tag_collection, None);
        assert!(!a.has_crm_data);
    }

    #[test]
    fn a_loaded_audience_gives_audience_insights_and_uploads() {
        let dto: AudienceDto = ok("load-audience.json");
        let insights = dto.to_insights().unwrap();
        assert_eq!(
            (insights.state.as_str(), insights.size, insights.uploads),
            ("READY", 1000, 2)
        );
        assert_eq!(
            insights.last_upload.as_deref(),
            Some("2025-12-16T08:00:00Z")
        );
        assert_eq!(insights.identifiers.len(), 2);
        assert_eq!(insights.identifiers[0].matched, 400);
        assert_eq!(insights.identifiers[0].match_rate, Some(0.68));
        let uploads = dto.to_uploads().unwrap();
        assert_eq!(uploads.uploads[0].uploaded_at, "2025-12-16T08:00:00Z");
        assert_eq!(uploads.uploads[1].total_rows, 400);
        let a = dto.into_audience();
        assert_eq!(a.source_audience_type_id, None);
        assert_eq!(
            a.tag_collection,
            Some(serde_json::json!(["newsletter", {"label": "q1", "color": "#00aa00"}]))
        );
        assert!(a.has_crm_data);
    }

    #[test]
    fn nulls_quoted_numbers_unknown_fields_and_any_date_key_are_read() {
        let dto: AudienceDto = ok("load-audience-loose.json");
        let insights = dto.to_insights().unwrap();
        assert_eq!(insights.state, "UNKNOWN");
        assert_eq!(insights.size, 0);
        // totalEvents null: the events themselves are counted (the null one is left out).
        assert_eq!(insights.uploads, 3);
        let uploads = dto.to_uploads().unwrap();
        let keys: Vec<&str> = uploads
            .uploads
            .iter()
            .map(|u| u.uploaded_at.as_str())
            .collect();
        // Date-only, no offset and with offset keys, ordered by time.
        assert_eq!(
            keys,
            [
                "2026-01-06T10:00:00",
                "2026-01-05",
                "2025-12-31T23:00:00+01:00"
            ]
        );
        let jan5 = &uploads.uploads[1];
        assert_eq!(jan5.total_rows, 0);
        assert_eq!(
            jan5.identifiers.len(),
            1,
            "the null PHONE counts are left out"
        );
        let email = &jan5.identifiers[0];
        assert_eq!(
            (email.total, email.unique, email.matched, email.unmatched),
            (10, 0, 4, 6)
        );
        assert_eq!(email.match_rate, Some(0.4));
        assert!(uploads.uploads[0].identifiers.is_empty());
        let a = dto.into_audience();
        assert_eq!(
            (a.id, a.user_id, a.campaign_id, a.type_id),
            (123, Some(42), Some(7), Some(9))
        );
        assert_eq!(a.audience_type.as_deref(), Some("SOMETHING_NEW"));
        assert!(!a.can_create_lookalike && !a.has_segments);
        assert_eq!(a.description, None);
    }

    #[test]
    fn an_unreadable_crm_data_leaves_the_audience_readable() {
        let dto: AudienceDto = ok("load-audience-bad-crm.json");
        let why = dto.to_insights().unwrap_err().0;
        assert!(why.starts_with("crmData.size: invalid value"), "{why}");
        assert_eq!(dto.to_uploads().unwrap_err().0, why);
        let a = dto.into_audience();
        assert_eq!(
            (a.id, a.name.as_str(), a.has_crm_data),
            (124, "Half readable", true)
        );
        // The audience-only read never looks into crmData.
        let summary: AudienceDto<IgnoredAny> = ok("load-audience-bad-crm.json");
        assert_eq!(summary.into_audience().id, 124);
    }

    #[test]
    fn an_audience_only_read_skips_the_history_and_gives_the_same_audience() {
        for name in ["load-audience.json", "load-audience-loose.json"] {
            let full: AudienceDto = ok(name);
            let summary: AudienceDto<IgnoredAny> = ok(name);
            assert_eq!(summary.into_audience(), full.into_audience(), "{name}");
        }
    }

    #[test]
    fn activation_ids_are_read_under_data_or_beside_it() {
        let a: ActivationDto = ok("activate.json");
        let a = a.into_activation(1001, 501);
        assert_eq!(
            (a.flow_id.as_str(), a.segment_id),
            ("7d9f8b52-1c1e-4a43-9a53-58f2c2d7a0b1", 98765)
        );
        let top: ActivationDto = ok("activate-top-level.json");
        assert_eq!(top.segment_id, Some(98766));
        assert_eq!(
            top.flow_id.as_deref(),
            Some("0b7c3a52-8e0f-4b5d-9a1e-2f3c4d5e6f70")
        );
        let none = br#"{"data":{"flowId":null},"status":{"statusCode":0},"success":true}"#;
        assert!(
            matches!(decode::<ActivationDto>(none), Decoded::Malformed(why) if why.contains("flowId"))
        );
    }

    #[test]
    fn success_true_decides_even_with_a_non_zero_status_code() {
        let a: ActivationDto = ok("success-with-nonzero-status.json");
        assert_eq!(a.segment_id, Some(98767));
        // Without `success`, the status code decides.
        assert!(matches!(
            decode::<IgnoredAny>(br#"{"status":{"statusCode":0}}"#),
            Decoded::Ok(_)
        ));
        assert!(matches!(
            decode::<IgnoredAny>(br#"{"status":{"statusCode":3,"message":"m"}}"#),
            Decoded::Failed { status_code: 3, .. }
        ));
    }

    #[test]
    fn data_the_gateway_does_not_need_may_have_any_shape() {
        for name in ["delete.json", "update-data-true.json", "login.json"] {
            assert!(
                matches!(decode::<IgnoredAny>(&fixture(name)), Decoded::Ok(_)),
                "{name}"
            );
        }
        for body in [
            &br#"{"data":null,"status":{"statusCode":0},"success":true}"#[..],
            br#"{"success":true}"#,
            br#"{"data":{"x":[1]},"success":true}"#,
        ] {
            assert!(matches!(decode::<IgnoredAny>(body), Decoded::Ok(_)));
        }
        let update: UpdateAnswer = ok("update-data-true.json");
        assert!(update.0.is_none());
        let update: UpdateAnswer = ok("create-audience.json");
        assert_eq!(update.0.map(|a| a.id), Some(69249));
    }

    #[test]
    fn refusals_and_expired_sessions_are_read_whatever_the_data() {
        match decode::<AudienceDto>(&fixture("refusal-envelope.json")) {
            Decoded::Failed {
                status_code,
                message,
            } => {
                assert_eq!(status_code, 400);
                assert_eq!(message.as_deref(), Some("endDate must be after startDate"));
            }
            other => panic!("{other:?}"),
        }
        // `data` that is not an audience must not hide the status (the client renews on 401).
        let expired =
            br#"{"data":{"x":[1,2,{"y":null}]},"status":{"statusCode":401},"success":false}"#;
        assert!(matches!(
            decode::<AudienceDto>(expired),
            Decoded::Failed {
                status_code: status_codes::UNAUTHORIZED,
                ..
            }
        ));
        assert!(matches!(
            decode::<AudienceDto>(&fixture("session-expired-envelope.json")),
            Decoded::Failed {
                status_code: 401,
                ..
            }
        ));
        let no_code = br#"{"data":null,"status":{"statusCode":0,"message":"no"},"success":false}"#;
        assert!(matches!(
            decode::<IgnoredAny>(no_code),
            Decoded::Failed {
                status_code: -1,
                ..
            }
        ));
    }

    #[test]
    fn malformed_bodies_name_the_value_at_fault() {
        assert!(matches!(
            decode::<IgnoredAny>(b"<html>"),
            Decoded::Malformed(_)
        ));
        assert!(matches!(
            decode::<IgnoredAny>(br#"{"data":true}"#),
            Decoded::Malformed(_)
        ));
        let bad_id = br#"{"data":{"id":"abc"},"status":{"statusCode":0},"success":true}"#;
        match decode::<AudienceDto>(bad_id) {
            Decoded::Malformed(why) => assert!(why.starts_with("data.id: invalid value"), "{why}"),
            other => panic!("{other:?}"),
        }
        let no_data = br#"{"data":null,"status":{"statusCode":0},"success":true}"#;
        assert!(
            matches!(decode::<AudienceDto>(no_data), Decoded::Malformed(why) if why.contains("without `data`"))
        );
        let bad_event = br#"{"data":{"id":1,"crmData":{"history":{"history":{"2026-01-05":{"matchRates":{"PHONE":"x"}}}}}},"success":true}"#;
        let dto: AudienceDto = match decode(bad_event) {
            Decoded::Ok(d) => d,
            other => panic!("{other:?}"),
        };
        let why = dto.to_uploads().unwrap_err().0;
        assert!(
            why.starts_with("crmData.history.history.2026-01-05.matchRates.PHONE"),
            "{why}"
        );
    }

    #[test]
    fn a_login_page_is_not_json() {
        assert!(is_not_json(
            Some("text/html; charset=utf-8"),
            &fixture("login-page.html")
        ));
        assert!(is_not_json(None, &fixture("login-page.html")));
        assert!(!is_not_json(
            Some("application/json"),
            &fixture("login.json")
        ));
        assert!(!is_not_json(None, b"  {\"data\":1}"));
    }

    #[test]
    fn access_tokens_are_never_read_and_ids_may_be_quoted() {
        let list: PlatformAccounts = ok("platform-accounts.json");
        let public: Vec<PlatformAccount> = list.0.into_iter().map(Into::into).collect();
        assert_eq!(public.len(), 2, "the null entry is left out");
        assert_eq!(public[0].client_id.as_deref(), Some("501001"));
        assert_eq!((public[1].id, public[1].platform_id), (502, Some(2)));
        assert_eq!(public[1].advertiser_id.as_deref(), Some("998877"));
        let json = serde_json::to_string(&public).unwrap();
        assert!(!json.contains("EAAB"), "{json}");
        assert!(!json.contains("accessToken"), "{json}");
        let campaign: CampaignDto = ok("create-campaign.json");
        assert_eq!(
            (campaign.id, campaign.name.as_deref()),
            (12, Some("Spring sale"))
        );
    }

    #[test]
    fn refusal_bodies_name_the_field_and_message() {
        let pd = Refusal::of_body(
            Some("application/problem+json"),
            &fixture("refusal-problem-details.json"),
            "HTTP 400",
        );
        assert_eq!(pd.field.as_deref(), Some("accountId"));
        assert_eq!(pd.message, "The account 999 does not exist.");
        let nf = Refusal::of_body(
            None,
            &fixture("refusal-problem-details-404.json"),
            "HTTP 404",
        );
        assert_eq!(
            (nf.field, nf.message.as_str()),
            (None, "Audience 9999 not found")
        );
        let env = Refusal::of_body(None, &fixture("refusal-envelope.json"), "HTTP 400");
        assert_eq!(env.message, "endDate must be after startDate");
        let plain = Refusal::of_body(
            Some("text/plain"),
            b"Name is required\r\n\tand short",
            "HTTP 400",
        );
        assert_eq!(plain.message, "Name is required and short");
        let html = Refusal::of_body(Some("text/html"), &fixture("login-page.html"), "HTTP 400");
        assert_eq!((html.field, html.message.as_str()), (None, "HTTP 400"));
        let long = "x".repeat(5_000);
        let bounded = Refusal::of_body(None, long.as_bytes(), "HTTP 400");
        assert_eq!(bounded.message.chars().count(), MAX_MESSAGE_CHARS + 1);
        let odd = br#"{"errors":{"$.accountId":["bad"],"x":["y"]}}"#;
        assert_eq!(
            Refusal::of_body(None, odd, "-").field.as_deref(),
            Some("accountId")
        );
        let hostile = br#"{"errors":{"<script>":["bad"]}}"#;
        assert_eq!(Refusal::of_body(None, hostile, "-").field, None);
    }
}
