//! Process lifecycle with the real binary: graceful shutdown on SIGTERM.

use std::io::Read;
use std::process::Command;
use std::time::{Duration, Instant};

use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::helpers::vendor::{audience as audience_json, envelope, mount_login};
use crate::helpers::{serve_binary, SECRET};

#[actix_web::test]
async fn sigterm_turns_not_ready_finishes_in_flight_requests_and_exits_0() {
    let mock = MockServer::start().await;
    mount_login(&mock).await;
    Mock::given(method("GET"))
        .and(path("/audience/loadAudienceById/1001"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(envelope(audience_json(1001, "slow")))
                .set_delay(Duration::from_millis(1500)),
        )
        .mount(&mock)
        .await;
    let (mut child, base) = serve_binary(
        &mock.uri(),
        &[
            ("GATEWAY_SERVER__SHUTDOWN_DRAIN_MS", "600"),
            ("GATEWAY_SERVER__SHUTDOWN_GRACE_SECS", "10"),
        ],
    )
    .await;
    let client = reqwest::Client::new();
    assert_eq!(
        client
            .get(format!("{base}/readyz"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );

    let in_flight = {
        let client = client.clone();
        let url = format!("{base}/v1/audiences/1001");
        tokio::spawn(async move {
            client
                .get(url)
                .bearer_auth(crate::helpers::full_token())
                .send()
                .await
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    tokio::time::sleep(Duration::from_millis(150)).await;
    let ready = client.get(format!("{base}/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), 503, "not ready first");
    let body: serde_json::Value = ready.json().await.unwrap();
    assert_eq!(body["shuttingDown"], true);

    let resp = in_flight
        .await
        .unwrap()
        .expect("the in-flight request completes");
    assert_eq!(resp.status(), 200);
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(body["name"], "slow");

    let deadline = Instant::now() + Duration::from_secs(15);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "the gateway did not exit");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(status.success(), "exit status {status:?}");
    assert!(
        client.get(format!("{base}/healthz")).send().await.is_err(),
        "listener closed"
    );
    // Log lines are written by a worker thread; the lines queued at exit are written too.
    let mut log = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut log)
        .unwrap();
    let lines: Vec<serde_json::Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    assert!(
        lines.iter().any(|l| l["target"] == "access"
            && l["route"] == "/v1/audiences/{id}"
            && l["status"] == 200),
        "the drained request's access line:\n{log}"
    );
    assert_eq!(lines.last().unwrap()["message"], "stopped", "{log}");
}

#[test]
fn a_malformed_setting_stops_start_up_naming_the_setting() {
    let out = Command::new(env!("CARGO_BIN_EXE_audience-gateway"))
        .arg("serve")
        .env("GATEWAY_UPSTREAM__BASE_URL", "http://127.0.0.1:1")
        .env("GATEWAY_UPSTREAM__USERNAME", "svc")
        .env("GATEWAY_UPSTREAM__PASSWORD", "pw")
        .env("GATEWAY_AUTH__HS256_SECRET", SECRET)
        .env("GATEWAY_SERVER__PORT", "not-a-port")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("server.port"), "{err}");

    let out = Command::new(env!("CARGO_BIN_EXE_audience-gateway"))
        .arg("serve")
        .env("GATEWAY_AUTH__HS256_SECRET", SECRET)
        .env_remove("GATEWAY_UPSTREAM__BASE_URL")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("upstream.base_url") && err.contains("GATEWAY_UPSTREAM__BASE_URL"),
        "{err}"
    );
}
