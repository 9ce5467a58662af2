//! Hostile input: oversized headers and tokens, deep JSON, slow clients.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::helpers::*;

#[actix_web::test]
async fn oversized_tokens_and_headers_are_refused_without_a_crash() {
    let app = spawn_with_sandbox(&[]).await;
    let big = format!("eyJhbGciOiJIUzI1NiJ9.{}.sig", "A".repeat(12_000));
    let resp = app
        .client
        .get(app.url("/v1/audiences/1001"))
        .bearer_auth(&big)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    let body = problem(resp).await;
    assert_eq!(body["detail"], "the token is too large");

    let huge = "A".repeat(100_000);
    let resp = app
        .client
        .get(app.url("/v1/audiences/1001"))
        .header("x-padding", huge)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 431);
    let body = problem(resp).await;
    assert_eq!(body["code"], "headers_too_large");
    assert_eq!(app.get("/healthz").await.status(), 200, "still serving");
}

#[actix_web::test]
async fn deeply_nested_json_is_a_400() {
    let app = spawn_with_sandbox(&[]).await;
    let deep = format!("{}{}", "[".repeat(5_000), "]".repeat(5_000));
    let resp = app
        .client
        .post(app.url("/v1/audiences"))
        .bearer_auth(full_token())
        .header("content-type", "application/json")
        .body(deep)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    assert_eq!(problem(resp).await["code"], "invalid_body");
    assert_eq!(app.sim().call_count("createAudience"), 0);
}

#[actix_web::test]
async fn slow_clients_are_cut_off() {
    let app = spawn_with_sandbox(&[("GATEWAY_SERVER__CLIENT_REQUEST_TIMEOUT_MS", "1000")]).await;
    let mut sock = tokio::net::TcpStream::connect(("127.0.0.1", app.port))
        .await
        .unwrap();
    sock.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let mut buf = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), sock.read_to_end(&mut buf)).await;
    assert!(
        read.is_ok(),
        "the server must close a connection that never finishes its head"
    );
    let text = String::from_utf8_lossy(&buf);
    assert!(
        text.is_empty() || text.starts_with("HTTP/1.1 408"),
        "{text}"
    );
    assert_eq!(app.get("/healthz").await.status(), 200, "still serving");
}
