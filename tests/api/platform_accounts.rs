//! `/v1/platform-accounts`: the list, never with the platforms' access tokens.

use serde_json::Value;

use crate::helpers::*;

#[actix_web::test]
async fn platform_accounts_never_carry_access_tokens() {
    let app = spawn_with_sandbox(&[]).await;

    let resp = app.get("/v1/platform-accounts").await;

    assert_eq!(resp.status(), 200);
    let headers = resp.headers().clone();
    assert_no_set_cookie(&headers);
    assert_eq!(header(&headers, "content-type"), "application/json");
    assert!(
        header(&headers, "cache-status").starts_with("audience-gateway; fwd=uri-miss"),
        "{headers:?}"
    );
    let text = resp.text().await.unwrap();
    assert!(!text.contains("accessToken"), "{text}");
    assert!(!text.to_ascii_lowercase().contains("token"), "{text}");
    let body: Value = serde_json::from_str(&text).unwrap();
    let items = body["items"].as_array().expect("items");
    let ids: Vec<i64> = items.iter().map(|a| a["id"].as_i64().unwrap()).collect();
    assert_eq!(ids, [501, 502, 503]);
    assert_eq!(items[0]["name"], "Sandbox Meta Ads");
    assert_eq!(items[0]["platformDisplayName"], "Meta");
    assert_eq!(items[0]["advertiserId"], "act_1048576000123");
    assert_eq!(items[0]["clientId"], "1048576000123");

    // The second read is served from the cache, still without tokens.
    let resp = app.get("/v1/platform-accounts").await;
    assert_eq!(resp.status(), 200);
    assert_no_set_cookie(resp.headers());
    assert!(header(resp.headers(), "cache-status").contains("hit"));
    assert!(!resp.text().await.unwrap().contains("accessToken"));
    assert_eq!(app.sim().call_count("loadPlatformAccounts"), 1);
}
