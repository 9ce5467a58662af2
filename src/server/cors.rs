//! CORS for browser frontends: the origins of `server.cors_allowed_origins`, the methods
//! and request headers the API takes, and the response headers a page may read.

use actix_cors::Cors;
use actix_web::http::header;

/// The CORS layer for `origins` (`*` allows any origin).
pub fn layer(origins: &[String]) -> Cors {
    let mut cors = Cors::default();
    for o in origins {
        cors = if o == "*" {
            cors.allow_any_origin()
        } else {
            cors.allowed_origin(o)
        };
    }
    cors.allowed_methods(["GET", "POST", "PATCH", "DELETE"])
        .allowed_headers([
            header::AUTHORIZATION,
            header::CONTENT_TYPE,
            header::IF_MATCH,
            header::IF_NONE_MATCH,
            header::CACHE_CONTROL,
            header::HeaderName::from_static("idempotency-key"),
            header::HeaderName::from_static("x-request-id"),
            header::HeaderName::from_static("traceparent"),
        ])
        .expose_headers([
            "etag",
            "cache-status",
            "cache-control",
            "ratelimit",
            "ratelimit-policy",
            "retry-after",
            "location",
            "x-request-id",
            "idempotent-replayed",
            "www-authenticate",
        ])
        .max_age(600)
}
