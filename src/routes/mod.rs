//! The HTTP surface: one module per resource, each with a `configure`, plus the shared
//! request-body extractor and response helpers.

pub mod accounts;
pub mod audiences;
pub mod campaigns;
pub mod health;

use std::time::Duration;

use actix_web::dev::Payload;
use actix_web::http::header::{self, HeaderMap, HeaderName, HeaderValue};
use actix_web::http::StatusCode;
use actix_web::{web, FromRequest, HttpRequest, HttpResponse};
use bytes::{Bytes, BytesMut};
use futures_util::future::LocalBoxFuture;
use futures_util::StreamExt;
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::error::ApiError;

/// The bounds on a request body (`server.max_body_bytes`, `server.client_body_timeout_ms`),
/// as `web::Data<BodyLimits>`.
#[derive(Debug, Clone, Copy)]
pub struct BodyLimits {
    pub max_bytes: usize,
    pub within: Duration,
}

/// Registers every documented route (used by the server and the spec export alike).
pub fn configure(cfg: &mut utoipa_actix_web::service_config::ServiceConfig) {
    cfg.service(
        utoipa_actix_web::scope("/v1")
            .configure(campaigns::configure)
            .configure(accounts::configure)
            .configure(audiences::configure),
    );
}

/// The request headers of a cached read (audiences and platform accounts), read by the
/// cache layer and `cache::layer::respond`; the table of what they do is in the README
/// ("Caching").
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Header)]
pub struct ReadHeaders {
    /// ETag from a previous response: `304 Not Modified` when it is current
    #[param(
        rename = "If-None-Match",
        nullable = false,
        example = "\"9f86d081884c7d659a2feaa0c55ad015\""
    )]
    pub if_none_match: Option<String>,
    /// `upstream-refresh` forces a read from the Digital Audience API; `no-cache` and
    /// `max-age=0` (a browser's revalidation) are answered from the gateway's cache
    #[param(
        rename = "Cache-Control",
        nullable = false,
        example = "upstream-refresh"
    )]
    pub cache_control: Option<String>,
}

/// A JSON request body: checked content type, bounded size, unknown fields named. Keeps the
/// raw bytes for idempotency fingerprints.
pub struct JsonBody<T> {
    pub value: T,
    pub raw: Bytes,
}

fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|m| m.trim().eq_ignore_ascii_case("application/json"))
}

/// Turns a serde error into a problem naming the field.
fn body_error(e: serde_path_to_error::Error<serde_json::Error>) -> ApiError {
    let path = e.path().to_string();
    let inner = e.into_inner();
    let message = inner.to_string();
    // serde reports an unknown field at the parent; name the field itself.
    let unknown = message
        .strip_prefix("unknown field `")
        .and_then(|rest| rest.split('`').next())
        .map(str::to_string);
    let missing = message
        .strip_prefix("missing field `")
        .and_then(|rest| rest.split('`').next())
        .map(str::to_string);
    let field = unknown.or(missing).unwrap_or_else(|| path.clone());
    let message = match message.find(" at line ") {
        Some(i) => message[..i].to_string(),
        None => message,
    };
    if inner.is_data() {
        ApiError::InvalidBody {
            detail: format!("{field}: {message}"),
            field: Some(field).filter(|f| f != "."),
        }
    } else {
        ApiError::InvalidBody {
            detail: format!("the body is not valid JSON: {message}"),
            field: None,
        }
    }
}

impl<T: DeserializeOwned + 'static> FromRequest for JsonBody<T> {
    type Error = ApiError;
    type Future = LocalBoxFuture<'static, Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let limits = req.app_data::<web::Data<BodyLimits>>();
        let limit = limits.map_or(64 * 1024, |l| l.max_bytes);
        let within = limits.map_or(Duration::from_secs(10), |l| l.within);
        let json = is_json(req.headers());
        let declared = req
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<usize>().ok());
        let mut payload = payload.take();
        Box::pin(async move {
            if !json {
                return Err(ApiError::UnsupportedMediaType);
            }
            if declared.is_some_and(|l| l > limit) {
                return Err(ApiError::PayloadTooLarge { limit });
            }
            // A body that stops arriving, or trickles in, is cut at `within`.
            let read = async move {
                let mut buf = BytesMut::new();
                while let Some(chunk) = payload.next().await {
                    let chunk = chunk.map_err(|_| ApiError::InvalidBody {
                        detail: "the request body could not be read".into(),
                        field: None,
                    })?;
                    if buf.len() + chunk.len() > limit {
                        return Err(ApiError::PayloadTooLarge { limit });
                    }
                    buf.extend_from_slice(&chunk);
                }
                Ok(buf)
            };
            let raw = tokio::time::timeout(within, read)
                .await
                .map_err(|_| ApiError::BodyTimeout { limit: within })??
                .freeze();
            let mut de = serde_json::Deserializer::from_slice(&raw);
            let value = serde_path_to_error::deserialize(&mut de).map_err(body_error)?;
            de.end().map_err(|_| ApiError::InvalidBody {
                detail: "the body has trailing characters after the JSON value".into(),
                field: None,
            })?;
            Ok(JsonBody { value, raw })
        })
    }
}

/// Parses an id path segment.
pub fn path_id(raw: &str) -> Result<i64, ApiError> {
    let id: i64 = raw.parse().map_err(|_| ApiError::InvalidPath {
        field: "id".into(),
        detail: "id: must be an integer".into(),
    })?;
    crate::domain::check_id("id", id)
}

/// A JSON response from bytes that are already serialized.
pub fn json_bytes(status: StatusCode, body: Bytes) -> HttpResponse {
    HttpResponse::build(status)
        .insert_header((
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        ))
        .body(body)
}

/// A JSON response from a value.
pub fn json<T: Serialize>(status: StatusCode, value: &T) -> Result<HttpResponse, ApiError> {
    let body = serde_json::to_vec(value).map_err(|_| ApiError::Internal)?;
    Ok(json_bytes(status, Bytes::from(body)))
}

/// Adds a header, skipping values that are not valid header text.
pub fn set_header(resp: &mut HttpResponse, name: HeaderName, value: &str) {
    if let Ok(v) = HeaderValue::from_str(value) {
        resp.headers_mut().insert(name, v);
    }
}
