//! The cache layer: a middleware between CORS and routing that answers a fresh hit or a
//! `304 Not Modified` for `GET /v1/audiences/{id}` (and its `/insights` and `/uploads`)
//! once the caller is authorized, by the same function the `Authorized<Read>` extractor
//! calls. Everything else (a miss, a forced refresh, a caller who is refused, a malformed
//! id, every other route, every read while the cache is disabled) goes on to routing and
//! the handler, which reads through the cache (and so fills it) and answers with
//! [`respond`] too. Every error answer leaves this layer with `Cache-Control: no-store`.
//!
//! It sits at the same place in the stack whatever the settings: inside the request-id
//! scope and the access log, so a hit is logged and counted under its route like any
//! answer, and inside CORS, so a hit carries the CORS headers.

use std::future::{ready, Ready};
use std::rc::Rc;

use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{forward_ready, Service, ServiceRequest, ServiceResponse, Transform};
use actix_web::http::header::{
    self, CacheControl, CacheDirective, Header, HeaderValue, IfNoneMatch,
};
use actix_web::http::Method;
use actix_web::{web, HttpRequest, HttpResponse};
use futures_util::future::{Either, LocalBoxFuture, MapOk};
use futures_util::TryFutureExt;

use super::{AudienceCache, Outcome, Representation, View};
use crate::auth::{Authenticator, Read};
use crate::telemetry::Route;
use crate::upstream::UpstreamClient;

/// The middleware described in the module docs (`App::wrap(HttpCache)`).
pub struct HttpCache;

impl<S, B> Transform<S, ServiceRequest> for HttpCache
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = actix_web::Error> + 'static,
    B: MessageBody + 'static,
{
    type Response = ServiceResponse<EitherBody<B>>;
    type Error = actix_web::Error;
    type Transform = HttpCacheService<S>;
    type InitError = ();
    type Future = Ready<Result<Self::Transform, ()>>;

    fn new_transform(&self, service: S) -> Self::Future {
        ready(Ok(HttpCacheService {
            service: Rc::new(service),
        }))
    }
}

/// [`HttpCache`] around the rest of the application.
pub struct HttpCacheService<S> {
    service: Rc<S>,
}

/// What a request this layer does not look at costs: the inner call, not boxed.
type PassedOn<S, B> = MapOk<
    <S as Service<ServiceRequest>>::Future,
    fn(ServiceResponse<B>) -> ServiceResponse<EitherBody<B>>,
>;

impl<S, B> Service<ServiceRequest> for HttpCacheService<S>
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = actix_web::Error> + 'static,
    B: MessageBody + 'static,
{
    type Response = ServiceResponse<EitherBody<B>>;
    type Error = actix_web::Error;
    type Future =
        Either<PassedOn<S, B>, LocalBoxFuture<'static, Result<Self::Response, Self::Error>>>;

    forward_ready!(service);

    fn call(&self, req: ServiceRequest) -> Self::Future {
        let Some((id, view)) = candidate(req.request()) else {
            let passed_on: fn(ServiceResponse<B>) -> ServiceResponse<EitherBody<B>> = passed_on;
            return Either::Left(self.service.call(req).map_ok(passed_on));
        };
        let service = self.service.clone();
        Either::Right(Box::pin(async move {
            match fresh_answer(req.request(), id, view).await {
                Some(response) => Ok(req.into_response(response).map_into_right_body()),
                None => Ok(passed_on(service.call(req).await?)),
            }
        }))
    }
}

/// An answer of the rest of the application: an error gets `Cache-Control: no-store`, so
/// no browser or proxy keeps it (a `404` or `401` is never served again from a copy).
fn passed_on<B>(mut res: ServiceResponse<B>) -> ServiceResponse<EitherBody<B>> {
    let status = res.status();
    if status.is_client_error() || status.is_server_error() {
        res.headers_mut()
            .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    res.map_into_left_body()
}

/// The audience read a request asks for, if this layer may answer it: a `GET` of one of the
/// cached reads, without a forced upstream read ([`forces_refresh`]), while the cache is enabled (with the
/// cache disabled there is never a fresh entry, so every request goes straight on).
fn candidate(req: &HttpRequest) -> Option<(i64, View)> {
    if req.method() != Method::GET {
        return None;
    }
    let read = cached_read(req.path())?;
    let enabled = req
        .app_data::<web::Data<AudienceCache>>()
        .is_some_and(|cache| cache.enabled());
    (enabled && !forces_refresh(req)).then_some(read)
}

/// The answer to a fresh hit, or `None` to hand the request on.
async fn fresh_answer(req: &HttpRequest, id: i64, view: View) -> Option<HttpResponse> {
    let auth = req.app_data::<web::Data<Authenticator>>()?;
    let cache = req.app_data::<web::Data<AudienceCache>>()?;
    let upstream = req.app_data::<web::Data<UpstreamClient>>()?;
    auth.authorize::<Read>(req).await.ok()?;
    let (entry, outcome) = cache.fresh(upstream.identity(), id).await?;
    // A part that cannot be shown goes to the handler, which answers the problem.
    let mut response = respond(cache, req, entry.view(view).ok()?, outcome);
    response.extensions_mut().insert(Route(route_of(view)));
    Some(response)
}

/// The audience reads this layer answers: `(id, view)` of `/v1/audiences/{id}`,
/// `/v1/audiences/{id}/insights` or `/v1/audiences/{id}/uploads` with a valid id.
fn cached_read(path: &str) -> Option<(i64, View)> {
    let rest = path.strip_prefix("/v1/audiences/")?;
    let (id, view) = match rest.split_once('/') {
        None => (rest, View::Audience),
        Some((id, "insights")) => (id, View::Insights),
        Some((id, "uploads")) => (id, View::Uploads),
        Some(_) => return None,
    };
    let id = id.parse().ok()?;
    crate::domain::check_id("id", id).ok().map(|id| (id, view))
}

/// The route template of each read [`cached_read`] takes, as routing names it.
fn route_of(view: View) -> &'static str {
    match view {
        View::Audience => "/v1/audiences/{id}",
        View::Insights => "/v1/audiences/{id}/insights",
        View::Uploads => "/v1/audiences/{id}/uploads",
    }
}

/// The `Cache-Control` extension directive (RFC 9111, section 5.2.3) with which a caller
/// forces a read from the upstream.
pub const UPSTREAM_REFRESH: &str = "upstream-refresh";

/// Whether the request forces an upstream read: `Cache-Control: upstream-refresh`.
///
/// The gateway is the API's origin, and its cache is part of it: every write through the
/// gateway drops the cached copy, so the cache is what the origin holds as current. A
/// request's `no-cache` or `max-age=0` (RFC 9111, sections 5.2.1.4 and 5.2.1.1), and
/// `Pragma: no-cache`, ask caches between the caller and the origin to revalidate with the
/// origin; this is that revalidation, so it is answered from the gateway's cache like any
/// read. `max-stale`, `min-fresh`, `only-if-cached` and `no-store` address those caches too
/// and change nothing here. Only the explicit extension directive reaches past the cache.
pub fn forces_refresh(req: &HttpRequest) -> bool {
    if !req.headers().contains_key(header::CACHE_CONTROL) {
        return false;
    }
    CacheControl::parse(req).is_ok_and(|cc| {
        cc.0.iter().any(
            |d| matches!(d, CacheDirective::Extension(name, None) if name.eq_ignore_ascii_case(UPSTREAM_REFRESH)),
        )
    })
}

/// Whether the request's `If-None-Match` matches `rep` (RFC 9110: weak comparison).
fn not_modified(req: &HttpRequest, rep: &Representation) -> bool {
    if !req.headers().contains_key(header::IF_NONE_MATCH) {
        return false;
    }
    match IfNoneMatch::parse(req) {
        Ok(IfNoneMatch::Any) => true,
        Ok(IfNoneMatch::Items(tags)) => tags.iter().any(|t| t.weak_eq(&rep.etag)),
        Err(_) => false,
    }
}

/// The answer to a read of `rep`: `304` when `If-None-Match` matches it, else the body;
/// with `ETag`, `Cache-Control` and `Cache-Status`.
pub fn respond(
    cache: &AudienceCache,
    req: &HttpRequest,
    rep: &Representation,
    outcome: Outcome,
) -> HttpResponse {
    let mut resp = if not_modified(req, rep) {
        HttpResponse::NotModified().finish()
    } else {
        HttpResponse::Ok()
            .insert_header((
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            ))
            .body(rep.body.clone())
    };
    let headers = resp.headers_mut();
    headers.insert(header::ETAG, rep.etag_header.clone());
    cache.set_headers(outcome, headers);
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_three_audience_reads_with_valid_ids_are_cached() {
        assert_eq!(
            cached_read("/v1/audiences/1001"),
            Some((1001, View::Audience))
        );
        assert_eq!(
            cached_read("/v1/audiences/7/insights"),
            Some((7, View::Insights))
        );
        assert_eq!(
            cached_read("/v1/audiences/7/uploads"),
            Some((7, View::Uploads))
        );
        for path in [
            "/v1/audiences",
            "/v1/audiences/",
            "/v1/audiences/abc",
            "/v1/audiences/0",
            "/v1/audiences/7/activations",
            "/v1/audiences/7/insights/x",
            "/v1/platform-accounts",
        ] {
            assert_eq!(cached_read(path), None, "{path}");
        }
    }
}
