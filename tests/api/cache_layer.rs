//! The cache layer in front of the audience reads: fresh hits and 304s answered before
//! routing, for a token on its first request as on its next, with the cache and CORS
//! headers and route labels of any answer; everything else reaches the handler, with the
//! request id and trace context on its way upstream.

use reqwest::header::HeaderMap;

use crate::helpers::*;

const ORIGIN: &str = "https://app.example.com";
const TRACEPARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
const READS: [&str; 3] = [
    "/v1/audiences/1001",
    "/v1/audiences/1001/insights",
    "/v1/audiences/1001/uploads",
];

/// What makes a browser or proxy revalidate every reuse of a read with the gateway.
fn assert_revalidated(headers: &HeaderMap) {
    assert_eq!(header(headers, "cache-control"), "private, no-cache");
    assert!(
        header(headers, "vary").starts_with("Authorization"),
        "{headers:?}"
    );
}

/// The count of `route`/`status` in a `/metrics` scrape.
fn request_count(metrics: &str, route: &str, status: u16) -> Option<u64> {
    let series = format!(
        "audience_gateway_http_request_duration_seconds_count{{route=\"{route}\",method=\"GET\",status=\"{status}\"}} "
    );
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(&series))
        .and_then(|n| n.parse().ok())
}

/// Each read once through the handler (a miss), then, with a token the gateway has not
/// seen, a hit and a 304, both answered by the layer: the representation, its ETag and
/// cache headers, and `extra` headers on every request. Returns the answers to check the
/// CORS headers of.
async fn hits_and_304s(app: &TestApp, extra: &[(&str, &str)]) -> Vec<HeaderMap> {
    let mut answers = Vec::new();
    for (n, path) in READS.iter().enumerate() {
        let miss = app.get_as(path, &full_token(), extra).await;
        assert_eq!(miss.status(), 200, "{path}");
        let etag = header(&miss, "etag");
        let body = miss.bytes().await.unwrap();

        let newcomer = token(&format!("reader-{}-{n}", extra.len()), &["audiences:read"]);
        let hit = app.get_as(path, &newcomer, extra).await;
        assert_eq!(hit.status(), 200, "{path}");
        assert_eq!(header(&hit, "etag"), etag, "{path}");
        assert_eq!(header(&hit, "content-type"), "application/json");
        assert!(!header(&hit, "x-request-id").is_empty());
        assert!(
            header(&hit, "cache-status").starts_with("audience-gateway; hit; ttl="),
            "{:?}",
            hit.headers()
        );
        assert_revalidated(hit.headers());
        answers.push(hit.headers().clone());
        assert_eq!(hit.bytes().await.unwrap(), body);

        let mut conditional = extra.to_vec();
        conditional.push(("if-none-match", &etag));
        let not_modified = app.get_as(path, &newcomer, &conditional).await;
        assert_eq!(not_modified.status(), 304, "{path}");
        assert_eq!(header(&not_modified, "etag"), etag);
        assert!(header(&not_modified, "cache-status").starts_with("audience-gateway; hit; ttl="));
        assert_revalidated(not_modified.headers());
        assert!(!header(&not_modified, "x-request-id").is_empty());
        answers.push(not_modified.headers().clone());
    }
    answers
}

/// Hits and 304s are counted under their route, like answers from the handlers.
async fn assert_counted_under_their_routes(app: &TestApp, hits: u64) {
    let metrics = app.get("/metrics").await.text().await.unwrap();
    for route in [
        "/v1/audiences/{id}",
        "/v1/audiences/{id}/insights",
        "/v1/audiences/{id}/uploads",
    ] {
        // A miss and a hit per round.
        assert_eq!(
            request_count(&metrics, route, 200),
            Some(2 * hits),
            "{route}: {metrics}"
        );
        assert_eq!(
            request_count(&metrics, route, 304),
            Some(hits),
            "{route}: {metrics}"
        );
    }
    assert!(!metrics.contains("route=\"unmatched\""), "{metrics}");
}

#[actix_web::test]
async fn hits_and_304s_are_answered_for_a_token_on_its_first_request() {
    let app = spawn_with_sandbox(&[]).await;
    for h in hits_and_304s(&app, &[]).await {
        assert!(header(&h, "access-control-allow-origin").is_empty());
    }
    assert_eq!(app.sim().call_count("loadAudience"), 1);
    assert_counted_under_their_routes(&app, 1).await;
}

#[actix_web::test]
async fn with_cors_configured_hits_and_304s_carry_the_cors_headers() {
    let app = spawn_with_sandbox(&[("GATEWAY_SERVER__CORS_ALLOWED_ORIGINS", ORIGIN)]).await;
    for h in hits_and_304s(&app, &[]).await {
        assert!(header(&h, "vary").contains("Origin"), "{:?}", h);
        assert!(header(&h, "access-control-allow-origin").is_empty());
    }
    for h in hits_and_304s(&app, &[("origin", ORIGIN)]).await {
        assert!(header(&h, "vary").contains("Origin"), "{:?}", h);
        assert_eq!(header(&h, "access-control-allow-origin"), ORIGIN);
        assert!(header(&h, "access-control-expose-headers").contains("cache-status"));
    }
    assert_eq!(app.sim().call_count("loadAudience"), 1);
    assert_counted_under_their_routes(&app, 2).await;
}

/// A read the handler answers: it carries the request's id and trace context upstream and
/// back.
async fn handled_read(
    app: &TestApp,
    path: &str,
    headers: &[(&str, &str)],
    status: u16,
    request_id: &str,
) -> reqwest::Response {
    let calls = app.sim().call_count("loadAudience");
    let mut all = vec![("x-request-id", request_id), ("traceparent", TRACEPARENT)];
    all.extend_from_slice(headers);
    let resp = app.get_as(path, &full_token(), &all).await;
    assert_eq!(resp.status(), status, "{path} {headers:?}");
    assert_eq!(header(&resp, "x-request-id"), request_id);
    assert_eq!(app.sim().call_count("loadAudience"), calls + 1, "{path}");
    let sent = app.sim().last_request_headers();
    let has = |k: &str, v: &str| sent.iter().any(|(a, b)| a == k && b == v);
    assert!(has("x-request-id", request_id), "{sent:?}");
    assert!(has("traceparent", TRACEPARENT), "{sent:?}");
    resp
}

/// A read of an audience the upstream does not have: a problem naming the request id.
async fn handled_not_found(app: &TestApp, path: &str, request_id: &str) {
    let body = problem(handled_read(app, path, &[], 404, request_id).await).await;
    assert_eq!(body["requestId"], request_id);
    assert_eq!(body["code"], "not_found", "{body}");
}

#[actix_web::test]
async fn with_the_cache_disabled_every_read_reaches_the_handler() {
    let app = spawn_with_sandbox(&[("GATEWAY_CACHE__ENABLED", "false")]).await;
    let mut etag = String::new();
    for (n, path) in READS.iter().enumerate() {
        let resp = handled_read(&app, path, &[], 200, &format!("read-{n}")).await;
        assert_eq!(
            header(&resp, "cache-status"),
            "audience-gateway; fwd=bypass"
        );
        assert_revalidated(resp.headers());
        assert_eq!(header(&resp, "content-type"), "application/json");
        if n == 0 {
            etag = header(&resp, "etag");
        }
    }
    let current = [("if-none-match", etag.as_str())];
    let resp = handled_read(&app, READS[0], &current, 304, "conditional").await;
    assert_eq!(header(&resp, "etag"), etag);
    handled_not_found(&app, "/v1/audiences/999999", "missing").await;
    handled_not_found(&app, "/v1/audiences/999999/insights", "missing-insights").await;

    let metrics = app.get("/metrics").await.text().await.unwrap();
    for (route, status, count) in [
        ("/v1/audiences/{id}", 200, 1),
        ("/v1/audiences/{id}/uploads", 200, 1),
        ("/v1/audiences/{id}", 304, 1),
        ("/v1/audiences/{id}", 404, 1),
        ("/v1/audiences/{id}/insights", 404, 1),
    ] {
        assert_eq!(
            request_count(&metrics, route, status),
            Some(count),
            "{route} {status}: {metrics}"
        );
    }
    assert!(!metrics.contains("route=\"unmatched\""), "{metrics}");
}

#[actix_web::test]
async fn refreshes_and_misses_reach_the_handler_and_refill_the_cache() {
    let app = spawn_with_sandbox(&[]).await;
    let resp = handled_read(&app, "/v1/audiences/1002", &[], 200, "miss").await;
    assert!(header(&resp, "cache-status").starts_with("audience-gateway; fwd=uri-miss; stored"));
    let refresh = [("cache-control", "upstream-refresh")];
    let resp = handled_read(&app, "/v1/audiences/1002", &refresh, 200, "refresh").await;
    assert!(header(&resp, "cache-status").starts_with("audience-gateway; fwd=request; stored"));
    // The refreshed entry serves the other views.
    let calls = app.sim().call_count("loadAudience");
    let resp = app.get("/v1/audiences/1002/uploads").await;
    assert!(header(&resp, "cache-status").starts_with("audience-gateway; hit"));
    assert_eq!(app.sim().call_count("loadAudience"), calls);
    handled_not_found(&app, "/v1/audiences/999998", "missing").await;
}

#[actix_web::test]
async fn with_cors_configured_misses_carry_the_cors_headers() {
    let app = spawn_with_sandbox(&[
        ("GATEWAY_CACHE__ENABLED", "false"),
        ("GATEWAY_SERVER__CORS_ALLOWED_ORIGINS", ORIGIN),
    ])
    .await;
    let origin = [("origin", ORIGIN)];
    let resp = handled_read(&app, READS[0], &origin, 200, "cors").await;
    assert_eq!(header(&resp, "access-control-allow-origin"), ORIGIN);
    // What selects the answer: the token, and the origin (CORS).
    assert!(header(&resp, "vary").starts_with("Authorization, Origin"));
    let resp = handled_read(&app, READS[0], &[], 200, "plain").await;
    assert!(header(&resp, "access-control-allow-origin").is_empty());
    assert!(header(&resp, "vary").contains("Origin"));
}

#[actix_web::test]
async fn with_cors_configured_every_hit_carries_the_cors_headers() {
    // The CORS middleware marks every answer `Vary: Origin`, so a browser cache never
    // serves a non-CORS answer to a CORS request; hits must not bypass it.
    let app = spawn_with_sandbox(&[("GATEWAY_SERVER__CORS_ALLOWED_ORIGINS", ORIGIN)]).await;
    assert_eq!(app.get("/v1/audiences/1001").await.status(), 200);
    for _ in 0..2 {
        let plain = app.get("/v1/audiences/1001").await;
        assert!(header(&plain, "cache-status").contains("hit"));
        assert!(
            header(&plain, "vary").contains("Origin"),
            "{:?}",
            plain.headers()
        );
        let cors = app
            .get_as("/v1/audiences/1001", &full_token(), &[("origin", ORIGIN)])
            .await;
        assert!(header(&cors, "cache-status").contains("hit"));
        assert_eq!(header(&cors, "access-control-allow-origin"), ORIGIN);
        assert!(header(&cors, "vary").contains("Origin"));
    }
    // An origin that is not allowed gets no CORS grant (the browser then withholds the
    // answer from its page), hit or not.
    let other = app
        .get_as(
            "/v1/audiences/1001",
            &full_token(),
            &[("origin", "https://evil.example.com")],
        )
        .await;
    assert!(header(&other, "cache-status").contains("hit"));
    assert!(header(&other, "access-control-allow-origin").is_empty());
    assert!(header(&other, "vary").contains("Origin"));
}

#[actix_web::test]
async fn a_fresh_entry_never_skips_token_checks() {
    let app = spawn_with_sandbox(&[]).await;
    assert_eq!(app.get("/v1/audiences/1001").await.status(), 200);
    let get = |token: String| {
        app.client
            .get(app.url("/v1/audiences/1001"))
            .bearer_auth(token)
            .send()
    };
    // A token the gateway has not seen yet is verified (then served from the cache).
    let newcomer = token("newcomer", &["audiences:read"]);
    for _ in 0..2 {
        let resp = get(newcomer.clone()).await.unwrap();
        assert_eq!(resp.status(), 200);
        assert!(header(&resp, "cache-status").contains("hit"));
    }
    // A verified token without the read scope, a forged one, none at all: refused.
    let writer = token("writer", &["audiences:write"]);
    for _ in 0..2 {
        let resp = get(writer.clone()).await.unwrap();
        assert_eq!(resp.status(), 403);
        assert_eq!(problem(resp).await["code"], "insufficient_scope");
    }
    // The newcomer's claims under another token's signature.
    let (claims, _) = newcomer.rsplit_once('.').unwrap();
    let (_, signature) = writer.rsplit_once('.').unwrap();
    let forged = format!("{claims}.{signature}");
    let resp = get(forged).await.unwrap();
    assert_eq!(resp.status(), 401);
    let resp = app
        .client
        .get(app.url("/v1/audiences/1001"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    assert_eq!(app.sim().call_count("loadAudience"), 1);
}

#[actix_web::test]
async fn conditional_and_cache_headers_are_read_as_rfc_9110_says() {
    let app = spawn_with_sandbox(&[]).await;
    let etag = header(&app.get(READS[0]).await, "etag");
    let weak = format!("W/{etag}");
    // If-None-Match: `*` and a weak tag match (weak comparison); a value that is not a
    // list of entity tags matches nothing. A browser's revalidation (`no-cache`,
    // `max-age=0`, `Pragma: no-cache`) is answered from the cache; only the extension
    // directive `upstream-refresh` reaches the upstream; directives it does not know are no
    // error.
    for (name, value, status, cache_status) in [
        ("if-none-match", "*", 304, "audience-gateway; hit; ttl="),
        (
            "if-none-match",
            weak.as_str(),
            304,
            "audience-gateway; hit; ttl=",
        ),
        (
            "if-none-match",
            "not-a-tag",
            200,
            "audience-gateway; hit; ttl=",
        ),
        (
            "cache-control",
            "max-age=abc, x-custom",
            200,
            "audience-gateway; hit; ttl=",
        ),
        (
            "cache-control",
            "max-age=0",
            200,
            "audience-gateway; hit; ttl=",
        ),
        (
            "cache-control",
            "no-store, no-cache",
            200,
            "audience-gateway; hit; ttl=",
        ),
        ("pragma", "no-cache", 200, "audience-gateway; hit; ttl="),
        (
            "cache-control",
            "upstream-refresh",
            200,
            "audience-gateway; fwd=request; stored",
        ),
        (
            "cache-control",
            "no-cache, Upstream-Refresh",
            200,
            "audience-gateway; fwd=request; stored",
        ),
    ] {
        let resp = app.get_as(READS[0], &full_token(), &[(name, value)]).await;
        assert_eq!(resp.status(), status, "{name}: {value}");
        assert!(
            header(&resp, "cache-status").starts_with(cache_status),
            "{name}: {value}"
        );
        assert_eq!(header(&resp, "etag"), etag, "{name}: {value}");
    }
    assert_eq!(app.sim().call_count("loadAudience"), 3);

    // If-Match: strong comparison, so a weak tag or a value that is no tag fails the
    // precondition; `*` holds.
    for (value, status) in [(weak.as_str(), 412), ("not-a-tag", 412), ("*", 200)] {
        let resp = app
            .client
            .patch(app.url(READS[0]))
            .bearer_auth(full_token())
            .header("if-match", value)
            .json(&serde_json::json!({"description": "Checked"}))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), status, "If-Match: {value}");
        if status == 412 {
            assert_eq!(problem(resp).await["code"], "precondition_failed");
        }
    }
    assert_eq!(app.sim().call_count("updateAudience"), 1);
}
