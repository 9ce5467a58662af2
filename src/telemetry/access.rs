//! The access line and the HTTP metrics: [`layer`] writes one line per request (method,
//! route template, status, latency, the caller's subject) and counts the request under its
//! route. It runs inside the request's scope, so the line carries the request id, and
//! outside CORS and the cache layer, so a refused preflight and a cache hit are logged and
//! counted like any answer.

use std::time::Instant;

use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::middleware::Next;
use actix_web::{web, HttpMessage};

use super::context::{MatchedRoute, Route};
use crate::auth::CallerSubject;
use crate::metrics::Metrics;

/// The layer described in the module docs.
pub async fn layer(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
    let started = Instant::now();
    let metrics = req.app_data::<web::Data<Metrics>>().cloned();
    let res = next.call(req).await?.map_into_boxed_body();
    let elapsed = started.elapsed();
    let status = res.status().as_u16();
    let method = res.request().method();
    // An answer given before routing names its route; otherwise the route the server span
    // resolved, or the matched pattern, or the path resolved against the routes when none
    // ran (a refused preflight).
    let named = res.response().extensions().get::<Route>().map(|r| r.0);
    let resolved = match named {
        Some(_) => None,
        None => res
            .request()
            .extensions()
            .get::<MatchedRoute>()
            .map(|r| r.0.clone())
            .or_else(|| res.request().match_pattern()),
    };
    let route = named.or(resolved.as_deref()).unwrap_or("unmatched");
    if let Some(metrics) = &metrics {
        metrics.http_request(route, method.as_str(), status, elapsed);
    }
    let extensions = res.request().extensions();
    let sub = extensions
        .get::<CallerSubject>()
        .map_or("-", |caller| caller.0.sub.as_str());
    tracing::info!(
        target: "access",
        method = method.as_str(),
        route,
        status,
        // Whole microseconds: a short number to write.
        latency_ms = elapsed.as_micros() as f64 / 1000.0,
        sub,
        "request"
    );
    drop(extensions);
    Ok(res)
}
