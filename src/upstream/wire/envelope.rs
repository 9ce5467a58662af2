//! The envelope around every vendor answer (`{"data", "status": {"statusCode", "message"},
//! "success"}`) and what a body says once decoded: its payload, no payload, a failure the
//! vendor reports, or why it cannot be read (with the path of the value at fault).

use serde::de::{DeserializeOwned, IgnoredAny};
use serde::Deserialize;

use super::lenient;

/// What a vendor answer's `data` is read into. The envelope is the same for every call; what
/// `data` must hold, and what its absence means, depends on the call.
pub trait Payload: DeserializeOwned {
    /// The payload when `data` is absent or `null`; `None` leaves the answer without one
    /// ([`Decoded::NoData`]).
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
    /// Success with `data` absent or `null`, for a payload that cannot stand in for it
    /// ([`Payload::absent`]).
    NoData,
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
                None => Decoded::NoData,
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
pub(super) fn unreadable_path<T: DeserializeOwned>(
    body: &[u8],
    fallback: &serde_json::Error,
) -> String {
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
