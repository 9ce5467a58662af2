//! The one reading of a vendor answer: from the operation, the HTTP status, the headers and
//! the body to one [`Answer`]. No I/O and no clock: the client around it (session, retries,
//! breaker, deadlines) only acts on what this returns. docs/UPSTREAM.md ("How answers are
//! read") is this function in words, and the table in its tests is that page row by row.

use std::borrow::Cow;
use std::time::{Duration, SystemTime};

use reqwest::header::{HeaderMap, CONTENT_TYPE, RETRY_AFTER, SET_COOKIE};
use reqwest::StatusCode;

use super::envelope::{decode, is_not_json, status_codes, Decoded, Payload};
use super::refusal::Refusal;
use super::{Operation, SESSION_COOKIE};

/// Longest wait a `Retry-After` is honoured for.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(60);

/// What one vendor answer means.
#[derive(Debug)]
pub enum Answer<T> {
    /// Success, with the payload the operation reads.
    Payload(T),
    /// Success without a payload: `204 No Content`, an empty body, or `data` absent or
    /// `null` where the payload cannot stand without it. The call was carried out.
    Done,
    /// The entity the call names does not exist (or a load found none to answer with).
    NotFound(String),
    /// The vendor refused the request: the caller's 4xx.
    Refused(Refusal),
    /// The session was not accepted; the vendor did not run the call.
    SessionExpired,
    /// The vendor is unavailable or throttling us, possibly saying for how long.
    Unavailable {
        reason: String,
        retry_after: Option<RetryAfter>,
    },
    /// The vendor failed.
    Failure(String),
    /// A success that cannot be read: the HTTP status and the path of the value at fault.
    Unreadable(String),
}

/// A `Retry-After` as the vendor sent it: delta-seconds or an HTTP-date (RFC 9110 §10.2.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryAfter {
    Delay(Duration),
    At(SystemTime),
}

impl RetryAfter {
    /// How long to wait from `now`: a date in the past is no wait; at most
    /// [`MAX_RETRY_AFTER`].
    pub fn wait(self, now: SystemTime) -> Duration {
        let wait = match self {
            RetryAfter::Delay(d) => d,
            RetryAfter::At(at) => at.duration_since(now).unwrap_or(Duration::ZERO),
        };
        wait.min(MAX_RETRY_AFTER)
    }

    fn of(headers: &HeaderMap) -> Option<Self> {
        let text = headers.get(RETRY_AFTER)?.to_str().ok()?.trim();
        match text.parse::<u64>() {
            Ok(secs) => Some(RetryAfter::Delay(Duration::from_secs(secs))),
            Err(_) => httpdate::parse_http_date(text).ok().map(RetryAfter::At),
        }
    }
}

/// Reads one answer of `op`. The login is read by its own rules (its refusals are not the
/// caller's, and it must set a session cookie); every other call by the same ones.
pub fn read<T: Payload>(
    op: Operation,
    status: StatusCode,
    headers: &HeaderMap,
    body: &[u8],
) -> Answer<T> {
    let content_type = headers.get(CONTENT_TYPE).and_then(|v| v.to_str().ok());
    let body = json_text(content_type, body);
    let code = status.as_u16();
    if op == Operation::Login {
        return login(code, headers, content_type, &body);
    }
    match code {
        200..=299 => success(op, code, content_type, &body),
        300..=399 | 401 | 403 => Answer::SessionExpired,
        400 | 404 | 409 | 422 => {
            let refusal = Refusal::of_body(content_type, &body, &format!("HTTP {code}"));
            if code == 404 {
                Answer::NotFound(refusal.message)
            } else {
                Answer::Refused(refusal)
            }
        }
        429 | 503 => Answer::Unavailable {
            reason: format!("HTTP {code}"),
            retry_after: RetryAfter::of(headers),
        },
        _ => Answer::Failure(format!("HTTP {code}")),
    }
}

/// A 2xx answer to a call that carried our session.
fn success<T: Payload>(
    op: Operation,
    code: u16,
    content_type: Option<&str>,
    body: &[u8],
) -> Answer<T> {
    if code == 204 || code == 205 || body.iter().all(u8::is_ascii_whitespace) {
        return no_payload(op);
    }
    // A login page instead of JSON: the vendor did not run the call, it asks us to log in.
    if is_not_json(content_type, body) {
        return Answer::SessionExpired;
    }
    match decode::<T>(body) {
        Decoded::Ok(v) => Answer::Payload(v),
        Decoded::NoData => no_payload(op),
        Decoded::Failed {
            status_code,
            message,
        } => failed(status_code, message),
        Decoded::Malformed(why) => Answer::Unreadable(format!("HTTP {code}: {why}")),
    }
}

/// Success without a payload: for a load, there was nothing to load (ASP.NET Core answers
/// a `null` result with 204); for anything else, the call was carried out.
fn no_payload<T>(op: Operation) -> Answer<T> {
    if op == Operation::LoadAudience {
        Answer::NotFound("the vendor answered without an audience".into())
    } else {
        Answer::Done
    }
}

/// An envelope with `success: false`, by its status code.
fn failed<T>(status_code: i64, message: Option<String>) -> Answer<T> {
    let refusal = Refusal::message(
        message
            .as_deref()
            .unwrap_or(&format!("statusCode {status_code}")),
    );
    match status_code {
        status_codes::UNAUTHORIZED => Answer::SessionExpired,
        status_codes::NOT_FOUND => Answer::NotFound(refusal.message),
        status_codes::FORBIDDEN => Answer::Failure(format!("forbidden: {}", refusal.message)),
        400..=499 => Answer::Refused(refusal),
        _ => Answer::Failure(format!("envelope statusCode {status_code}")),
    }
}

/// The login's answer: success is a 2xx, an envelope saying success (or no body) and a
/// session cookie. A refusal here is ours (wrong credentials), never the caller's.
fn login<T: Payload>(
    code: u16,
    headers: &HeaderMap,
    content_type: Option<&str>,
    body: &[u8],
) -> Answer<T> {
    let refused = |why: String| Answer::Refused(Refusal::message(&why));
    match code {
        200..=299 => {}
        429 | 503 => {
            return Answer::Unavailable {
                reason: format!("HTTP {code}"),
                retry_after: RetryAfter::of(headers),
            }
        }
        300..=499 => {
            let r = Refusal::of_body(content_type, body, "no reason given");
            return refused(format!("login refused (HTTP {code}): {}", r.message));
        }
        _ => return Answer::Failure(format!("HTTP {code}")),
    }
    let empty = code == 204 || body.iter().all(u8::is_ascii_whitespace);
    if !empty && is_not_json(content_type, body) {
        return refused(format!(
            "login answered HTTP {code} with a page that is not JSON"
        ));
    }
    let answer = if empty {
        Answer::Done
    } else {
        match decode::<T>(body) {
            Decoded::Ok(v) => Answer::Payload(v),
            Decoded::NoData => Answer::Done,
            Decoded::Failed { status_code, .. } => {
                return refused(format!("login refused (statusCode {status_code})"))
            }
            Decoded::Malformed(why) => return refused(format!("login answer unreadable: {why}")),
        }
    };
    if sets_session_cookie(headers) {
        answer
    } else {
        refused("login succeeded without a session cookie".into())
    }
}

/// Whether the answer sets a non-empty session cookie (parsed by the `cookie` crate; the
/// cookie jar keeps it, this only checks that it came).
fn sets_session_cookie(headers: &HeaderMap) -> bool {
    headers
        .get_all(SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .filter_map(|v| cookie::Cookie::parse(v).ok())
        .any(|c| c.name() == SESSION_COOKIE && !c.value().is_empty())
}

/// The body as UTF-8 JSON text: without a byte order mark, and transcoded when it is
/// UTF-16 (by its mark, or by `charset=utf-16`, taken as little-endian as .NET's
/// `Encoding.Unicode` writes it, or `utf-16be`). Anything else is read as it is.
fn json_text<'a>(content_type: Option<&str>, body: &'a [u8]) -> Cow<'a, [u8]> {
    if let Some(rest) = body.strip_prefix(b"\xEF\xBB\xBF") {
        return Cow::Borrowed(rest);
    }
    if let Some(rest) = body.strip_prefix(b"\xFF\xFE") {
        return utf16(rest, u16::from_le_bytes);
    }
    if let Some(rest) = body.strip_prefix(b"\xFE\xFF") {
        return utf16(rest, u16::from_be_bytes);
    }
    match charset(content_type).as_deref() {
        Some("utf-16" | "utf-16le" | "unicode") => utf16(body, u16::from_le_bytes),
        Some("utf-16be") => utf16(body, u16::from_be_bytes),
        _ => Cow::Borrowed(body),
    }
}

fn utf16(bytes: &[u8], unit: fn([u8; 2]) -> u16) -> Cow<'static, [u8]> {
    let units = bytes.chunks_exact(2).map(|c| unit([c[0], c[1]]));
    let text: String = char::decode_utf16(units)
        .map(|c| c.unwrap_or(char::REPLACEMENT_CHARACTER))
        .collect();
    Cow::Owned(text.into_bytes())
}

/// The `charset` parameter of a `Content-Type`, lower-cased and unquoted.
fn charset(content_type: Option<&str>) -> Option<String> {
    content_type?.split(';').skip(1).find_map(|p| {
        let (name, value) = p.split_once('=')?;
        name.trim()
            .eq_ignore_ascii_case("charset")
            .then(|| value.trim().trim_matches('"').to_ascii_lowercase())
    })
}

#[cfg(test)]
mod tests {
    use std::time::UNIX_EPOCH;

    use reqwest::header::HeaderValue;
    use serde::de::IgnoredAny;

    use super::*;
    use crate::upstream::wire::dto::{ActivationDto, AudienceDto, UpdateAnswer};
    use crate::upstream::wire::Crm;

    fn fixture(name: &str) -> Vec<u8> {
        let path = format!(
            "{}/tests/fixtures/vendor/{name}",
            env!("CARGO_MANIFEST_DIR")
        );
        std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
    }

    /// The answer in one line: its kind, then what it carries.
    fn summary<T>(answer: &Answer<T>, payload: impl Fn(&T) -> String) -> String {
        match answer {
            Answer::Payload(v) => format!("payload {}", payload(v)),
            Answer::Done => "done".into(),
            Answer::NotFound(why) => format!("not found: {why}"),
            Answer::Refused(r) => format!("refused {:?}: {}", r.field, r.message),
            Answer::SessionExpired => "session expired".into(),
            Answer::Unavailable {
                reason,
                retry_after,
            } => format!(
                "unavailable {reason}, wait {:?}",
                retry_after.map(|r| r.wait(UNIX_EPOCH + Duration::from_secs(1_700_000_000)))
            ),
            Answer::Failure(why) => format!("failure: {why}"),
            Answer::Unreadable(why) => format!("unreadable: {why}"),
        }
    }

    /// One documented vendor behaviour: the operation, status, headers and fixture body,
    /// and the answer it must read as.
    struct Row {
        behaviour: &'static str,
        op: Operation,
        status: u16,
        headers: &'static [(&'static str, &'static str)],
        body: &'static str,
        answer: &'static str,
    }

    fn read_row(row: &Row) -> String {
        let mut headers = HeaderMap::new();
        for (name, value) in row.headers {
            headers.append(*name, HeaderValue::from_static(value));
        }
        let status = StatusCode::from_u16(row.status).unwrap();
        let body = fixture(row.body);
        match row.op {
            Operation::LoadAudience | Operation::CreateAudience => summary(
                &read::<AudienceDto<Crm>>(row.op, status, &headers, &body),
                |a| format!("audience {}", a.id),
            ),
            Operation::UpdateAudience => summary(
                &read::<UpdateAnswer>(row.op, status, &headers, &body),
                |u| format!("audience {:?}", u.0.as_ref().map(|a| a.id)),
            ),
            Operation::ActivateAudience => summary(
                &read::<ActivationDto>(row.op, status, &headers, &body),
                |a| format!("segment {:?}", a.segment_id),
            ),
            _ => summary(&read::<IgnoredAny>(row.op, status, &headers, &body), |_| {
                "ignored".into()
            }),
        }
    }

    const JSON: (&str, &str) = ("content-type", "application/json; charset=utf-8");
    const SESSION: (&str, &str) = (
        "set-cookie",
        "digitalAudience=0123abcd; path=/; samesite=lax; httponly",
    );
    const AFFINITY: (&str, &str) = (
        "set-cookie",
        "ARRAffinity=5f1e; Path=/; HttpOnly; Domain=vendor.azurewebsites.net",
    );

    /// docs/UPSTREAM.md, "How answers are read", row by row.
    const TABLE: &[Row] = &[
        Row {
            behaviour: "a load answered with the audience",
            op: Operation::LoadAudience,
            status: 200,
            headers: &[JSON],
            body: "load-audience.json",
            answer: "payload audience 123",
        },
        Row {
            behaviour: "a load answered `data: null`: no such audience",
            op: Operation::LoadAudience,
            status: 200,
            headers: &[JSON],
            body: "load-audience-null.json",
            answer: "not found: the vendor answered without an audience",
        },
        Row {
            behaviour: "a load answered 204: ASP.NET Core's answer to a null result",
            op: Operation::LoadAudience,
            status: 204,
            headers: &[],
            body: "no-content.txt",
            answer: "not found: the vendor answered without an audience",
        },
        Row {
            behaviour: "an update answered 204 with no body: done",
            op: Operation::UpdateAudience,
            status: 204,
            headers: &[],
            body: "no-content.txt",
            answer: "done",
        },
        Row {
            behaviour: "an update answered 200 with an empty body: done",
            op: Operation::UpdateAudience,
            status: 200,
            headers: &[("content-length", "0")],
            body: "no-content.txt",
            answer: "done",
        },
        Row {
            behaviour: "an update answered `data: true`",
            op: Operation::UpdateAudience,
            status: 200,
            headers: &[JSON],
            body: "update-data-true.json",
            answer: "payload audience None",
        },
        Row {
            behaviour: "a delete answered 204: done",
            op: Operation::DeleteAudience,
            status: 204,
            headers: &[],
            body: "no-content.txt",
            answer: "done",
        },
        Row {
            behaviour: "a delete answered with the envelope",
            op: Operation::DeleteAudience,
            status: 200,
            headers: &[JSON],
            body: "delete.json",
            answer: "payload ignored",
        },
        Row {
            behaviour: "the platform accounts answered 204: done (an empty list)",
            op: Operation::LoadPlatformAccounts,
            status: 204,
            headers: &[],
            body: "no-content.txt",
            answer: "done",
        },
        Row {
            behaviour: "a create answered `data: null`: done, without the audience",
            op: Operation::CreateAudience,
            status: 200,
            headers: &[JSON],
            body: "load-audience-null.json",
            answer: "done",
        },
        Row {
            behaviour: "an activation with its ids beside `data: null`",
            op: Operation::ActivateAudience,
            status: 200,
            headers: &[JSON],
            body: "activate-top-level.json",
            answer: "payload segment Some(98766)",
        },
        Row {
            behaviour: "UTF-8 with a byte order mark, a 64-bit id, .NET dates",
            op: Operation::LoadAudience,
            status: 200,
            headers: &[JSON],
            body: "load-audience-dotnet.json",
            answer: "payload audience 3000000001",
        },
        Row {
            behaviour: "UTF-16 (little-endian, with its mark)",
            op: Operation::LoadAudience,
            status: 200,
            headers: &[("content-type", "application/json; charset=utf-16")],
            body: "load-audience-utf16.json",
            answer: "payload audience 1001",
        },
        Row {
            behaviour: "cookie authentication's redirect to its login page",
            op: Operation::LoadAudience,
            status: 302,
            headers: &[("location", "/Account/Login?ReturnUrl=%2Faudience")],
            body: "no-content.txt",
            answer: "session expired",
        },
        Row {
            behaviour: "IIS 401.2 page (an expired or missing login)",
            op: Operation::LoadAudience,
            status: 401,
            headers: &[("content-type", "text/html")],
            body: "iis-401.html",
            answer: "session expired",
        },
        Row {
            behaviour: "403 from cookie authentication (access denied)",
            op: Operation::DeleteAudience,
            status: 403,
            headers: &[],
            body: "no-content.txt",
            answer: "session expired",
        },
        Row {
            behaviour: "the login form served with 200 in place of the answer",
            op: Operation::UpdateAudience,
            status: 200,
            headers: &[("content-type", "text/html; charset=utf-8")],
            body: "login-page.html",
            answer: "session expired",
        },
        Row {
            behaviour: "an envelope saying statusCode 401",
            op: Operation::LoadAudience,
            status: 200,
            headers: &[JSON],
            body: "session-expired-envelope.json",
            answer: "session expired",
        },
        Row {
            behaviour: "[ApiController] validation: ProblemDetails naming the field",
            op: Operation::CreateAudience,
            status: 400,
            headers: &[("content-type", "application/problem+json; charset=utf-8")],
            body: "refusal-problem-details.json",
            answer: "refused Some(\"accountId\"): The account 999 does not exist.",
        },
        Row {
            behaviour: "NotFound() as ProblemDetails",
            op: Operation::LoadAudience,
            status: 404,
            headers: &[("content-type", "application/problem+json; charset=utf-8")],
            body: "refusal-problem-details-404.json",
            answer: "not found: Audience 9999 not found",
        },
        Row {
            behaviour: "a refusal in the envelope on HTTP 200",
            op: Operation::ActivateAudience,
            status: 200,
            headers: &[JSON],
            body: "refusal-envelope.json",
            answer: "refused None: endDate must be after startDate",
        },
        Row {
            behaviour: "App Service 503 with Retry-After in seconds (capped at a minute)",
            op: Operation::LoadAudience,
            status: 503,
            headers: &[("content-type", "text/html"), ("retry-after", "120")],
            body: "azure-503.html",
            answer: "unavailable HTTP 503, wait Some(60s)",
        },
        Row {
            behaviour: "429 with Retry-After as an HTTP-date",
            op: Operation::CreateAudience,
            status: 429,
            headers: &[("retry-after", "Tue, 14 Nov 2023 22:13:50 GMT")],
            body: "no-content.txt",
            answer: "unavailable HTTP 429, wait Some(30s)",
        },
        Row {
            behaviour: "429 with a Retry-After date already past",
            op: Operation::CreateAudience,
            status: 429,
            headers: &[("retry-after", "Tue, 14 Nov 2023 22:12:00 GMT")],
            body: "no-content.txt",
            answer: "unavailable HTTP 429, wait Some(0ns)",
        },
        Row {
            behaviour: "a 502 from the front end (the worker did not answer)",
            op: Operation::LoadAudience,
            status: 502,
            headers: &[("content-type", "text/html")],
            body: "azure-503.html",
            answer: "failure: HTTP 502",
        },
        Row {
            behaviour: "an id that is not a number: unreadable, with the path",
            op: Operation::LoadAudience,
            status: 200,
            headers: &[JSON],
            body: "load-audience-bad-id.json",
            answer: "unreadable: HTTP 200: data.id: invalid value: string \"abc\", expected an integer, a numeric string or null at line 1 column 19",
        },
        Row {
            behaviour: "a login setting the session and an affinity cookie",
            op: Operation::Login,
            status: 200,
            headers: &[JSON, AFFINITY, SESSION],
            body: "login.json",
            answer: "payload ignored",
        },
        Row {
            behaviour: "a login answered 204 with the session cookie",
            op: Operation::Login,
            status: 204,
            headers: &[SESSION],
            body: "no-content.txt",
            answer: "done",
        },
        Row {
            behaviour: "a login without a session cookie",
            op: Operation::Login,
            status: 200,
            headers: &[JSON, AFFINITY],
            body: "login.json",
            answer: "refused None: login succeeded without a session cookie",
        },
        Row {
            behaviour: "a login refused with 401",
            op: Operation::Login,
            status: 401,
            headers: &[("content-type", "text/html")],
            body: "iis-401.html",
            answer: "refused None: login refused (HTTP 401): no reason given",
        },
        Row {
            behaviour: "a login throttled",
            op: Operation::Login,
            status: 503,
            headers: &[("retry-after", "5")],
            body: "azure-503.html",
            answer: "unavailable HTTP 503, wait Some(5s)",
        },
    ];

    #[test]
    fn every_documented_vendor_answer_reads_as_the_table_says() {
        let mut wrong = Vec::new();
        for row in TABLE {
            let got = read_row(row);
            if got != row.answer {
                wrong.push(format!(
                    "{}: {} {} {}\n  expected {}\n  got      {got}",
                    row.behaviour,
                    row.op.name(),
                    row.status,
                    row.body,
                    row.answer
                ));
            }
        }
        assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    }
}
