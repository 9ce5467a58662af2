//! The committed OpenAPI document is the one the code generates and the one the gateway
//! serves; the docs need no token; unknown methods on documented paths get 405.

use crate::helpers::*;

const REGENERATE: &str = "cargo run -q -- openapi --output openapi/openapi.json";

fn committed() -> String {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/openapi/openapi.json");
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{path}: {e}; run `{REGENERATE}`"))
}

#[test]
fn committed_spec_matches_the_generated_one() {
    let (committed, generated) = (committed(), audience_gateway::openapi::spec_json());
    if committed != generated {
        let first = committed
            .lines()
            .zip(generated.lines())
            .position(|(c, g)| c != g)
            .unwrap_or_else(|| committed.lines().count().min(generated.lines().count()));
        panic!(
            "openapi/openapi.json differs from the generated spec from line {}: run `{REGENERATE}`\n\
             committed: {:?}\ngenerated: {:?}",
            first + 1,
            committed.lines().nth(first),
            generated.lines().nth(first),
        );
    }
}

#[actix_web::test]
async fn served_spec_and_docs_need_no_token() {
    let app = spawn_with_sandbox(&[]).await;

    let resp = app
        .client
        .get(app.url("/openapi.json"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let served: serde_json::Value = resp.json().await.unwrap();
    let committed: serde_json::Value = serde_json::from_str(&committed()).unwrap();
    assert!(
        served == committed,
        "served /openapi.json differs from the committed spec"
    );

    let resp = app.client.get(app.url("/docs")).send().await.unwrap();
    assert_eq!(resp.status(), 308);
    assert_eq!(resp.headers()["location"], "/docs/");
    let resp = app.client.get(app.url("/docs/")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert!(resp.text().await.unwrap().contains("swagger-ui"));
    let resp = app
        .client
        .get(app.url("/docs/swagger-initializer.js"))
        .send()
        .await
        .unwrap();
    let init = resp.text().await.unwrap();
    for setting in [
        r#""url": "/openapi.json""#,
        r#""persistAuthorization": true"#,
        r#""tryItOutEnabled": true"#,
    ] {
        assert!(init.contains(setting), "{setting} missing in\n{init}");
    }
}

#[actix_web::test]
async fn undocumented_methods_get_405_with_allow_and_unknown_paths_404() {
    let app = spawn_with_sandbox(&[]).await;

    let resp = app
        .client
        .request(reqwest::Method::TRACE, app.url("/v1/audiences/1001"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 405);
    assert_eq!(resp.headers()["allow"], "GET, DELETE, PATCH");
    let body = problem(resp).await;
    assert_eq!(body["code"], "method_not_allowed");
    assert_eq!(body["status"], 405);

    let resp = app.client.put(app.url("/healthz")).send().await.unwrap();
    assert_eq!(resp.status(), 405);
    assert_eq!(resp.headers()["allow"], "GET");

    for path in [
        "/v1/nothing",
        "/v1/audiences/1001/",
        "/v1/audiences//insights",
    ] {
        let resp = app.client.delete(app.url(path)).send().await.unwrap();
        assert_eq!(resp.status(), 404, "{path}");
        assert_eq!(problem(resp).await["code"], "route_not_found", "{path}");
    }
}
