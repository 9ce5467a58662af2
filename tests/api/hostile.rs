//! Hostile input: oversized headers and tokens, deep JSON, slow clients.

use std::time::Duration;

use serde_json::json;
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
    let problem = raw_problem(&text, 408);
    assert_eq!(problem["code"], "head_timeout");
    assert_eq!(
        problem["detail"],
        "the request head did not arrive within 1000 ms"
    );
    assert_eq!(app.get("/healthz").await.status(), 200, "still serving");
}

/// Sends `head` and then `body` a chunk of `chunk` bytes every `every` (writes after the
/// server closed are ignored), and reads what the server answers until it closes the
/// connection, for at most 10 s: the answer, or `None` if the connection stayed open.
async fn stalled_request(
    port: u16,
    head: String,
    body: &[u8],
    chunk: usize,
    every: Duration,
) -> Option<String> {
    let sock = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    let (mut read, mut write) = sock.into_split();
    let body = body.to_vec();
    let writer = tokio::spawn(async move {
        write.write_all(head.as_bytes()).await?;
        for part in body.chunks(chunk) {
            write.write_all(part).await?;
            tokio::time::sleep(every).await;
        }
        // Then nothing more: the rest of the declared length never comes.
        tokio::time::sleep(Duration::from_secs(30)).await;
        std::io::Result::Ok(())
    });
    let mut buf = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), read.read_to_end(&mut buf)).await;
    writer.abort();
    read.ok()
        .map(|_| String::from_utf8_lossy(&buf).into_owned())
}

fn activation_head(length: usize, token: Option<&str>) -> String {
    let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    format!(
        "POST /v1/audiences/1001/activations HTTP/1.1\r\nHost: x\r\n{auth}\
         Content-Type: application/json\r\nContent-Length: {length}\r\n\r\n"
    )
}

#[actix_web::test]
async fn a_stalled_or_trickling_body_is_cut_with_a_408_and_the_connection_closed() {
    let app = spawn_with_sandbox(&[("GATEWAY_SERVER__CLIENT_BODY_TIMEOUT_MS", "300")]).await;
    let token = full_token();
    let body = serde_json::to_vec(&activation_body()).unwrap();
    let cases = [
        ("one byte, then nothing", 1, Duration::from_secs(30)),
        ("a byte every 50 ms", 1, Duration::from_millis(50)),
    ];
    for (case, chunk, every) in cases {
        let head = activation_head(body.len(), Some(&token));
        let answer = stalled_request(app.port, head, &body, chunk, every)
            .await
            .unwrap_or_else(|| panic!("{case}: the connection stayed open"));
        let (head, problem) = answer.split_once("\r\n\r\n").expect("a whole answer");
        let head = head.to_ascii_lowercase();
        assert!(head.starts_with("http/1.1 408"), "{case}: {answer}");
        assert!(
            head.contains("content-type: application/problem+json"),
            "{case}: {answer}"
        );
        assert!(head.contains("connection: close"), "{case}: {answer}");
        let problem: serde_json::Value = serde_json::from_str(problem).expect("problem+json");
        assert_eq!(
            problem,
            json!({
                "type": "urn:audience-gateway:problem:body_timeout",
                "title": "Request body timeout",
                "status": 408,
                "detail": "the request body did not arrive within 300 ms",
                "code": "body_timeout",
                "requestId": problem["requestId"],
            }),
            "{case}"
        );
    }
    // Refused before the body is read: answered, and the connection closed all the same.
    let answer = stalled_request(
        app.port,
        activation_head(body.len(), None),
        &body[..1],
        1,
        Duration::from_secs(30),
    )
    .await
    .expect("the connection of a refused request with a stalled body is closed");
    assert!(answer.starts_with("HTTP/1.1 401"), "{answer}");
    assert_eq!(app.sim().call_count("activateAudience"), 0);
    assert_eq!(app.get("/healthz").await.status(), 200, "still serving");
}

/// The problem+json body of a raw answer, after checking its head: `status`, the media
/// type, no caching, the connection closed, and `X-Request-Id` equal to the body's.
fn raw_problem(answer: &str, status: u16) -> serde_json::Value {
    let (head, body) = answer.split_once("\r\n\r\n").expect("a head and a body");
    let head = head.to_ascii_lowercase();
    assert!(head.starts_with(&format!("http/1.1 {status} ")), "{answer}");
    for line in [
        "content-type: application/problem+json",
        "cache-control: no-store",
        "connection: close",
    ] {
        assert!(head.contains(line), "{line} in {answer}");
    }
    let length: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length: "))
        .and_then(|v| v.trim().parse().ok())
        .expect("content-length");
    assert_eq!(length, body.len(), "{answer}");
    let problem: serde_json::Value = serde_json::from_str(body).expect("a JSON body");
    let id = problem["requestId"]
        .as_str()
        .expect("a request id")
        .to_string();
    assert!(head.contains(&format!("x-request-id: {id}")), "{answer}");
    assert_eq!(problem["status"], status);
    problem
}

#[actix_web::test]
async fn refusals_of_the_http_layer_are_problems_logged_as_warnings() {
    let (child, base) = serve_binary("http://127.0.0.1:1", &[]).await;
    let port: u16 = base.rsplit(':').next().unwrap().parse().unwrap();
    let many_headers: String = (0..120).map(|i| format!("X-H{i}: v\r\n")).collect();
    let cases = [
        ("GARBAGE\r\n\r\n".to_string(), 400, "malformed_request"),
        (
            "GET /healthz HTTP/1.1\r\nHost: x\r\nBad Header: v\r\n\r\n".to_string(),
            400,
            "malformed_request",
        ),
        (
            format!("GET /healthz HTTP/1.1\r\nHost: x\r\n{many_headers}\r\n"),
            431,
            "head_too_large",
        ),
    ];
    let mut ids = Vec::new();
    for (head, status, code) in cases {
        let answer = stalled_request(port, head, b"", 1, Duration::ZERO)
            .await
            .expect("answered and closed");
        let problem = raw_problem(&answer, status);
        assert_eq!(problem["code"], code, "{answer}");
        assert_eq!(
            problem["type"],
            format!("urn:audience-gateway:problem:{code}")
        );
        ids.push(problem["requestId"].as_str().unwrap().to_string());
    }
    // A refusal after an answer on the same connection: the answer as it was, then the
    // refusal as a problem.
    let pipelined = stalled_request(
        port,
        "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\nGET /healthz HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n"
            .to_string(),
        b"",
        1,
        Duration::ZERO,
    )
    .await
    .expect("answered and closed");
    let (first, refusal) = pipelined
        .split_once("{\"status\":\"ok\"}")
        .expect("the first answer");
    assert!(first.starts_with("HTTP/1.1 200"), "{pipelined}");
    let problem = raw_problem(refusal, 400);
    assert_eq!(problem["code"], "malformed_request");
    ids.push(problem["requestId"].as_str().unwrap().to_string());

    let lines = json_lines(&stop_binary(child));
    assert!(!lines.iter().any(|l| l["level"] == "ERROR"), "{lines:?}");
    let warned = lines
        .iter()
        .filter(|l| l["level"] == "WARN" && l["target"] == "actix_http::h1::dispatcher")
        .count();
    assert_eq!(warned, 4, "{lines:?}");
    for id in ids {
        assert!(
            lines.iter().any(|l| l["level"] == "WARN"
                && l["request_id"] == id.as_str()
                && l["message"] == "request refused by the HTTP layer"),
            "a warning with {id}: {lines:?}"
        );
    }
}

#[actix_web::test]
async fn a_client_that_does_not_read_its_response_is_cut_off() {
    let app = spawn_with_sandbox(&[("GATEWAY_SERVER__CLIENT_RESPONSE_TIMEOUT_MS", "1000")]).await;
    let whole = app
        .get("/docs/swagger-ui-bundle.js")
        .await
        .bytes()
        .await
        .unwrap()
        .len();
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut sock = socket
        .connect(([127, 0, 0, 1], app.port).into())
        .await
        .unwrap();
    sock.write_all(b"GET /docs/swagger-ui-bundle.js HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    // Not reading, for well past the bound.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let mut got = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), sock.read_to_end(&mut got))
        .await
        .expect("the connection is closed, not left open");
    assert!(
        read.is_err() || got.len() < whole,
        "the whole response ({whole} bytes) was still delivered: {read:?}, {} bytes",
        got.len()
    );
    assert_eq!(app.get("/healthz").await.status(), 200, "still serving");
}
