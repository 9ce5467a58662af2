//! The `azure` vendor style: the vendor as an ASP.NET Core service hosted on Azure App
//! Service (IIS and ARR in front, two instances) answers by default. What changes:
//! - two instances behind Application Request Routing: a caller without an `ARRAffinity`
//!   cookie lands on the next instance in turn, and every answer to it sets
//!   `ARRAffinity=<instance>; Path=/; HttpOnly` and `ARRAffinitySameSite=<instance>; Path=/;
//!   HttpOnly; SameSite=None; Secure`; a session is known only to the instance whose login
//!   opened it, so a caller that does not send the affinity cookie back meets "no session"
//!   on the other instance;
//! - the session cookie has ASP.NET Core's attributes (`path=/; samesite=lax; httponly`),
//!   and sliding expiration: an answer to a call whose session is past half its lifetime
//!   sets a new session cookie (a new session from now; the old one lives on until it
//!   expires);
//! - update and delete answer `204 No Content` with no body; a load of an audience that does
//!   not exist answers `204` (an action returning `null`) for an even id and `200` with
//!   `data: null` for an odd one;
//! - new audiences get ids beyond 32 bits (a C# `long`), from 3000000001;
//! - JSON is `application/json; charset=utf-8`; dates are written as System.Text.Json
//!   writes a `DateTime`: UTC with `Z`, fraction without trailing zeros, and
//!   `0001-01-01T00:00:00` (`DateTime.MinValue`) for a date the audience does not have;
//! - "down" is `503` with `Retry-After` as an HTTP-date.

use actix_web::http::header::{self, HeaderValue};
use actix_web::{HttpRequest, HttpResponse};
use chrono::{DateTime, Utc};
use serde_json::{json, Value};

use crate::control::Instance;
use crate::handlers::{Reply, SESSION_COOKIE};

/// First id of an audience created in this style.
pub(crate) const FIRST_WIDE_ID: i64 = 3_000_000_001;

const AFFINITY: &str = "ARRAffinity";
/// What .NET writes for `default(DateTime)`.
const NO_DATE: &str = "0001-01-01T00:00:00";
/// Fields of the vendor's objects that are .NET `DateTime`s.
const DATES: [&str; 5] = ["created", "updated", "startDate", "endDate", "dataUpdated"];

/// The instance's affinity value: 64 hex digits, as ARR's.
fn affinity(instance: Instance) -> String {
    format!("{:064x}", 0xa1_u64 + u64::from(instance.0))
}

/// The instance named by the request's `ARRAffinity` cookie.
pub(crate) fn instance_of(req: &HttpRequest) -> Option<Instance> {
    let value = req
        .headers()
        .get_all(header::COOKIE)
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == AFFINITY)?
        .1;
    [Instance(0), Instance(1)]
        .into_iter()
        .find(|i| affinity(*i) == value)
}

/// Pins a caller to `instance`, as ARR does on an answer to a caller without affinity.
pub(crate) fn pin(response: &mut HttpResponse, instance: Instance) {
    let value = affinity(instance);
    for cookie in [
        format!("{AFFINITY}={value}; Path=/; HttpOnly"),
        format!("{AFFINITY}SameSite={value}; Path=/; HttpOnly; SameSite=None; Secure"),
    ] {
        if let Ok(cookie) = HeaderValue::from_str(&cookie) {
            response.headers_mut().append(header::SET_COOKIE, cookie);
        }
    }
}

/// The session cookie as ASP.NET Core's cookie authentication writes it.
pub(crate) fn session_cookie(token: &str) -> String {
    format!("{SESSION_COOKIE}={token}; path=/; samesite=lax; httponly")
}

/// A successful call's answer.
pub(crate) fn success(reply: Reply, renewed: Option<String>) -> HttpResponse {
    let mut response = match &reply {
        Reply::Updated(_) | Reply::Deleted => HttpResponse::NoContent(),
        _ => HttpResponse::Ok(),
    };
    let token = match &reply {
        Reply::LoggedIn(token) => Some(token.clone()),
        _ => renewed,
    };
    if let Some(token) = token {
        response.insert_header((header::SET_COOKIE, session_cookie(&token)));
    }
    let data = match reply {
        Reply::Updated(_) | Reply::Deleted => return response.finish(),
        Reply::LoggedIn(_) => Value::Bool(true),
        Reply::Audience(audience) => dates(to_value(&audience)),
        Reply::Activated(activation) => to_value(&activation),
        Reply::Campaign(campaign) => dates(to_value(&campaign)),
        Reply::Accounts(accounts) => Value::Array(
            accounts
                .iter()
                .map(|account| dates(to_value(account)))
                .collect(),
        ),
    };
    json_utf8(response, &envelope(data))
}

/// A load of audience `id`, which does not exist: what a controller returning `null` gives.
pub(crate) fn no_audience(id: i64) -> HttpResponse {
    if id % 2 == 0 {
        HttpResponse::NoContent().finish()
    } else {
        json_utf8(HttpResponse::Ok(), &envelope(Value::Null))
    }
}

/// "Down": App Service's 503, asking to come back in a second.
pub(crate) fn unavailable(body: &'static str, now: DateTime<Utc>) -> HttpResponse {
    let at = now + chrono::Duration::seconds(1);
    HttpResponse::ServiceUnavailable()
        .insert_header((
            header::RETRY_AFTER,
            at.format("%a, %d %b %Y %H:%M:%S GMT").to_string(),
        ))
        .content_type("text/html")
        .body(body)
}

fn envelope(data: Value) -> Value {
    json!({"data": data, "status": {"statusCode": 0, "message": null}, "success": true})
}

fn json_utf8(mut response: actix_web::HttpResponseBuilder, body: &Value) -> HttpResponse {
    response
        .content_type("application/json; charset=utf-8")
        .body(body.to_string())
}

fn to_value<T: serde::Serialize>(value: &T) -> Value {
    serde_json::to_value(value).unwrap_or(Value::Null)
}

/// Dates of an object as System.Text.Json writes a `DateTime`.
fn dates(mut value: Value) -> Value {
    if let Value::Object(object) = &mut value {
        for key in DATES {
            if let Some(date) = object.get_mut(key) {
                *date = match &*date {
                    Value::Null => Value::String(NO_DATE.into()),
                    Value::String(text) => Value::String(dotnet_date(text)),
                    other => other.clone(),
                };
            }
        }
    }
    value
}

/// An RFC 3339 text as `DateTime` (UTC) round-trips: `Z`, up to seven fractional digits,
/// trailing zeros left out.
fn dotnet_date(text: &str) -> String {
    match DateTime::parse_from_rfc3339(text) {
        Ok(at) => {
            let at = at.with_timezone(&Utc);
            let fraction = format!("{:07}", at.timestamp_subsec_nanos() / 100);
            let fraction = fraction.trim_end_matches('0');
            let seconds = at.format("%Y-%m-%dT%H:%M:%S");
            if fraction.is_empty() {
                format!("{seconds}Z")
            } else {
                format!("{seconds}.{fraction}Z")
            }
        }
        Err(_) => text.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_are_written_as_dotnet_writes_them() {
        assert_eq!(
            dotnet_date("2025-12-15T11:36:16.489708Z"),
            "2025-12-15T11:36:16.489708Z"
        );
        assert_eq!(
            dotnet_date("2026-01-01T01:00:00+01:00"),
            "2026-01-01T00:00:00Z"
        );
        assert_eq!(
            dotnet_date("2026-01-01T00:00:00.1234567Z"),
            "2026-01-01T00:00:00.1234567Z"
        );
        let audience =
            dates(json!({"id": 1, "startDate": null, "created": "2026-01-01T00:00:00.500Z"}));
        assert_eq!(
            audience,
            json!({"id": 1, "startDate": NO_DATE, "created": "2026-01-01T00:00:00.5Z"})
        );
    }

    #[test]
    fn each_instance_has_its_own_affinity() {
        assert_ne!(affinity(Instance(0)), affinity(Instance(1)));
        assert_eq!(affinity(Instance(0)).len(), 64);
    }
}
