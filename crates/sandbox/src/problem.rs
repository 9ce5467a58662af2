//! ASP.NET Core ProblemDetails (RFC 9457) bodies, as the `strict` and `problem-details`
//! vendor styles answer refusals.

use std::collections::BTreeMap;

use actix_web::http::StatusCode;
use actix_web::HttpResponse;
use serde::Serialize;

use crate::state::Rejection;

/// A ProblemDetails `errors` map: PascalCase field (`$` for the whole body) → messages.
pub(crate) type Errors = BTreeMap<String, Vec<String>>;

/// ASP.NET's media type for these bodies, charset included as it sends it.
pub(crate) const CONTENT_TYPE: &str = "application/problem+json; charset=utf-8";
const TYPE_BAD_REQUEST: &str = "https://tools.ietf.org/html/rfc9110#section-15.5.1";
const TYPE_UNAUTHORIZED: &str = "https://tools.ietf.org/html/rfc9110#section-15.5.2";
const TYPE_NOT_FOUND: &str = "https://tools.ietf.org/html/rfc9110#section-15.5.5";
const TITLE_VALIDATION: &str = "One or more validation errors occurred.";

/// Fields in the order ASP.NET writes them.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ProblemDetails<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    title: &'static str,
    status: u16,
    #[serde(skip_serializing_if = "Option::is_none")]
    detail: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    errors: Option<&'a Errors>,
    trace_id: String,
}

/// HTTP 400 naming every field that failed validation.
pub(crate) fn validation(errors: &Errors) -> HttpResponse {
    respond(
        StatusCode::BAD_REQUEST,
        &ProblemDetails {
            kind: TYPE_BAD_REQUEST,
            title: TITLE_VALIDATION,
            status: 400,
            detail: None,
            errors: Some(errors),
            trace_id: trace_id(),
        },
    )
}

/// A refusal of the simulator's own rules: 400 naming the field, 404, or 401 for a login.
pub(crate) fn rejection(rejection: &Rejection) -> HttpResponse {
    let (status, kind, title) = match rejection {
        Rejection::Invalid { field, message } => {
            return validation(&Errors::from([(
                (*field).to_owned(),
                vec![message.clone()],
            )]))
        }
        Rejection::NotFound(_) => (StatusCode::NOT_FOUND, TYPE_NOT_FOUND, "Not Found"),
        Rejection::BadCredentials => (StatusCode::UNAUTHORIZED, TYPE_UNAUTHORIZED, "Unauthorized"),
    };
    respond(
        status,
        &ProblemDetails {
            kind,
            title,
            status: status.as_u16(),
            detail: Some(rejection.message()),
            errors: None,
            trace_id: trace_id(),
        },
    )
}

fn respond(status: StatusCode, problem: &ProblemDetails<'_>) -> HttpResponse {
    HttpResponse::build(status)
        .content_type(CONTENT_TYPE)
        .json(problem)
}

/// A W3C `traceparent`, the shape ASP.NET puts in `traceId`.
fn trace_id() -> String {
    format!(
        "00-{:032x}-{:016x}-00",
        rand::random::<u128>(),
        rand::random::<u64>()
    )
}
