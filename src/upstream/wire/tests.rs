//! The fixtures of tests/fixtures/vendor/ decoded: envelopes, objects, conversions and
//! refusal bodies.

use serde::de::IgnoredAny;

use super::dto::{ActivationDto, AudienceDto, CampaignDto, PlatformAccounts, UpdateAnswer};
use super::envelope::{decode, is_not_json, status_codes, Decoded, Payload};
use super::refusal::{Refusal, MAX_MESSAGE_CHARS};
use crate::domain::PlatformAccount;

/// A vendor body kept in tests/fixtures/vendor/.
fn fixture(name: &str) -> Vec<u8> {
    let path = format!(
        "{}/tests/fixtures/vendor/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn ok<T: Payload + std::fmt::Debug>(name: &str) -> T {
    match decode::<T>(&fixture(name)) {
        Decoded::Ok(v) => v,
        other => panic!("{name}: {other:?}"),
    }
}

#[test]
fn the_vendor_pages_create_example_is_read_whole() {
    let dto: AudienceDto = ok("create-audience.json");
    let a = dto.into_audience();
    assert_eq!(a.id, 69249);
    assert_eq!(a.name, "testfhdfhdfh");
    assert_eq!(a.campaign_id, Some(123));
    assert_eq!(a.activation_status.as_deref(), Some("New"));
    assert_eq!(a.activation_status_id, Some(0));
    assert_eq!(a.audience_state_id, Some(5));
    assert_eq!(a.type_id, Some(0));
    assert_eq!(a.lifetime_status_id, None);
    assert_eq!(a.tag_collection, None);
    assert!(!a.has_crm_data);
}

#[test]
fn a_loaded_audience_gives_audience_insights_and_uploads() {
    let dto: AudienceDto = ok("load-audience.json");
    let insights = dto.to_insights().unwrap();
    assert_eq!(
        (insights.state.as_str(), insights.size, insights.uploads),
        ("READY", 1000, 2)
    );
    assert_eq!(
        insights.last_upload.as_deref(),
        Some("2025-12-16T08:00:00Z")
    );
    assert_eq!(insights.identifiers.len(), 2);
    assert_eq!(insights.identifiers[0].matched, 400);
    assert_eq!(insights.identifiers[0].match_rate, Some(0.68));
    let uploads = dto.to_uploads().unwrap();
    assert_eq!(uploads.uploads[0].uploaded_at, "2025-12-16T08:00:00Z");
    assert_eq!(uploads.uploads[1].total_rows, 400);
    let a = dto.into_audience();
    assert_eq!(a.source_audience_type_id, None);
    assert_eq!(
        a.tag_collection,
        Some(serde_json::json!(["newsletter", {"label": "q1", "color": "#00aa00"}]))
    );
    assert!(a.has_crm_data);
}

#[test]
fn nulls_quoted_numbers_unknown_fields_and_any_date_key_are_read() {
    let dto: AudienceDto = ok("load-audience-loose.json");
    let insights = dto.to_insights().unwrap();
    assert_eq!(insights.state, "UNKNOWN");
    assert_eq!(insights.size, 0);
    // totalEvents null: the events themselves are counted (the null one is left out).
    assert_eq!(insights.uploads, 3);
    let uploads = dto.to_uploads().unwrap();
    let keys: Vec<&str> = uploads
        .uploads
        .iter()
        .map(|u| u.uploaded_at.as_str())
        .collect();
    // Date-only, no offset and with offset keys, ordered by time.
    assert_eq!(
        keys,
        [
            "2026-01-06T10:00:00",
            "2026-01-05",
            "2025-12-31T23:00:00+01:00"
        ]
    );
    let jan5 = &uploads.uploads[1];
    assert_eq!(jan5.total_rows, 0);
    assert_eq!(
        jan5.identifiers.len(),
        1,
        "the null PHONE counts are left out"
    );
    let email = &jan5.identifiers[0];
    assert_eq!(
        (email.total, email.unique, email.matched, email.unmatched),
        (10, 0, 4, 6)
    );
    assert_eq!(email.match_rate, Some(0.4));
    assert!(uploads.uploads[0].identifiers.is_empty());
    let a = dto.into_audience();
    assert_eq!(
        (a.id, a.user_id, a.campaign_id, a.type_id),
        (123, Some(42), Some(7), Some(9))
    );
    assert_eq!(a.audience_type.as_deref(), Some("SOMETHING_NEW"));
    assert!(!a.can_create_lookalike && !a.has_segments);
    assert_eq!(a.description, None);
}

#[test]
fn an_unreadable_crm_data_leaves_the_audience_readable() {
    let dto: AudienceDto = ok("load-audience-bad-crm.json");
    let why = dto.to_insights().unwrap_err().0;
    assert!(why.starts_with("crmData.size: invalid value"), "{why}");
    assert_eq!(dto.to_uploads().unwrap_err().0, why);
    let a = dto.into_audience();
    assert_eq!(
        (a.id, a.name.as_str(), a.has_crm_data),
        (124, "Half readable", true)
    );
    // The audience-only read never looks into crmData.
    let summary: AudienceDto<IgnoredAny> = ok("load-audience-bad-crm.json");
    assert_eq!(summary.into_audience().id, 124);
}

#[test]
fn an_audience_only_read_skips_the_history_and_gives_the_same_audience() {
    for name in ["load-audience.json", "load-audience-loose.json"] {
        let full: AudienceDto = ok(name);
        let summary: AudienceDto<IgnoredAny> = ok(name);
        assert_eq!(summary.into_audience(), full.into_audience(), "{name}");
    }
}

#[test]
fn activation_ids_are_read_under_data_or_beside_it() {
    let a: ActivationDto = ok("activate.json");
    let a = a.into_activation(1001, 501);
    assert_eq!(
        (a.flow_id.as_str(), a.segment_id),
        ("7d9f8b52-1c1e-4a43-9a53-58f2c2d7a0b1", 98765)
    );
    let top: ActivationDto = ok("activate-top-level.json");
    assert_eq!(top.segment_id, Some(98766));
    assert_eq!(
        top.flow_id.as_deref(),
        Some("0b7c3a52-8e0f-4b5d-9a1e-2f3c4d5e6f70")
    );
    let none = br#"{"data":{"flowId":null},"status":{"statusCode":0},"success":true}"#;
    assert!(
        matches!(decode::<ActivationDto>(none), Decoded::Malformed(why) if why.contains("flowId"))
    );
}

#[test]
fn success_true_decides_even_with_a_non_zero_status_code() {
    let a: ActivationDto = ok("success-with-nonzero-status.json");
    assert_eq!(a.segment_id, Some(98767));
    // Without `success`, the status code decides.
    assert!(matches!(
        decode::<IgnoredAny>(br#"{"status":{"statusCode":0}}"#),
        Decoded::Ok(_)
    ));
    assert!(matches!(
        decode::<IgnoredAny>(br#"{"status":{"statusCode":3,"message":"m"}}"#),
        Decoded::Failed { status_code: 3, .. }
    ));
}

#[test]
fn data_the_gateway_does_not_need_may_have_any_shape() {
    for name in ["delete.json", "update-data-true.json", "login.json"] {
        assert!(
            matches!(decode::<IgnoredAny>(&fixture(name)), Decoded::Ok(_)),
            "{name}"
        );
    }
    for body in [
        &br#"{"data":null,"status":{"statusCode":0},"success":true}"#[..],
        br#"{"success":true}"#,
        br#"{"data":{"x":[1]},"success":true}"#,
    ] {
        assert!(matches!(decode::<IgnoredAny>(body), Decoded::Ok(_)));
    }
    let update: UpdateAnswer = ok("update-data-true.json");
    assert!(update.0.is_none());
    let update: UpdateAnswer = ok("create-audience.json");
    assert_eq!(update.0.map(|a| a.id), Some(69249));
}

#[test]
fn refusals_and_expired_sessions_are_read_whatever_the_data() {
    match decode::<AudienceDto>(&fixture("refusal-envelope.json")) {
        Decoded::Failed {
            status_code,
            message,
        } => {
            assert_eq!(status_code, 400);
            assert_eq!(message.as_deref(), Some("endDate must be after startDate"));
        }
        other => panic!("{other:?}"),
    }
    // `data` that is not an audience must not hide the status (the client renews on 401).
    let expired = br#"{"data":{"x":[1,2,{"y":null}]},"status":{"statusCode":401},"success":false}"#;
    assert!(matches!(
        decode::<AudienceDto>(expired),
        Decoded::Failed {
            status_code: status_codes::UNAUTHORIZED,
            ..
        }
    ));
    assert!(matches!(
        decode::<AudienceDto>(&fixture("session-expired-envelope.json")),
        Decoded::Failed {
            status_code: 401,
            ..
        }
    ));
    let no_code = br#"{"data":null,"status":{"statusCode":0,"message":"no"},"success":false}"#;
    assert!(matches!(
        decode::<IgnoredAny>(no_code),
        Decoded::Failed {
            status_code: -1,
            ..
        }
    ));
}

#[test]
fn malformed_bodies_name_the_value_at_fault() {
    assert!(matches!(
        decode::<IgnoredAny>(b"<html>"),
        Decoded::Malformed(_)
    ));
    assert!(matches!(
        decode::<IgnoredAny>(br#"{"data":true}"#),
        Decoded::Malformed(_)
    ));
    let bad_id = br#"{"data":{"id":"abc"},"status":{"statusCode":0},"success":true}"#;
    match decode::<AudienceDto>(bad_id) {
        Decoded::Malformed(why) => assert!(why.starts_with("data.id: invalid value"), "{why}"),
        other => panic!("{other:?}"),
    }
    let no_data = br#"{"data":null,"status":{"statusCode":0},"success":true}"#;
    assert!(matches!(decode::<AudienceDto>(no_data), Decoded::NoData));
    let bad_event = br#"{"data":{"id":1,"crmData":{"history":{"history":{"2026-01-05":{"matchRates":{"PHONE":"x"}}}}}},"success":true}"#;
    let dto: AudienceDto = match decode(bad_event) {
        Decoded::Ok(d) => d,
        other => panic!("{other:?}"),
    };
    let why = dto.to_uploads().unwrap_err().0;
    assert!(
        why.starts_with("crmData.history.history.2026-01-05.matchRates.PHONE"),
        "{why}"
    );
}

#[test]
fn a_login_page_is_not_json() {
    assert!(is_not_json(
        Some("text/html; charset=utf-8"),
        &fixture("login-page.html")
    ));
    assert!(is_not_json(None, &fixture("login-page.html")));
    assert!(!is_not_json(
        Some("application/json"),
        &fixture("login.json")
    ));
    assert!(!is_not_json(None, b"  {\"data\":1}"));
}

#[test]
fn access_tokens_are_never_read_and_ids_may_be_quoted() {
    let list: PlatformAccounts = ok("platform-accounts.json");
    let public: Vec<PlatformAccount> = list.0.into_iter().map(Into::into).collect();
    assert_eq!(public.len(), 2, "the null entry is left out");
    assert_eq!(public[0].client_id.as_deref(), Some("501001"));
    assert_eq!((public[1].id, public[1].platform_id), (502, Some(2)));
    assert_eq!(public[1].advertiser_id.as_deref(), Some("998877"));
    let json = serde_json::to_string(&public).unwrap();
    assert!(!json.contains("EAAB"), "{json}");
    assert!(!json.contains("accessToken"), "{json}");
    let campaign: CampaignDto = ok("create-campaign.json");
    assert_eq!(
        (campaign.id, campaign.name.as_deref()),
        (12, Some("Spring sale"))
    );
}

#[test]
fn refusal_bodies_name_the_field_and_message() {
    let pd = Refusal::of_body(
        Some("application/problem+json"),
        &fixture("refusal-problem-details.json"),
        "HTTP 400",
    );
    assert_eq!(pd.field.as_deref(), Some("accountId"));
    assert_eq!(pd.message, "The account 999 does not exist.");
    let nf = Refusal::of_body(
        None,
        &fixture("refusal-problem-details-404.json"),
        "HTTP 404",
    );
    assert_eq!(
        (nf.field, nf.message.as_str()),
        (None, "Audience 9999 not found")
    );
    let env = Refusal::of_body(None, &fixture("refusal-envelope.json"), "HTTP 400");
    assert_eq!(env.message, "endDate must be after startDate");
    let plain = Refusal::of_body(
        Some("text/plain"),
        b"Name is required\r\n\tand short",
        "HTTP 400",
    );
    assert_eq!(plain.message, "Name is required and short");
    let html = Refusal::of_body(Some("text/html"), &fixture("login-page.html"), "HTTP 400");
    assert_eq!((html.field, html.message.as_str()), (None, "HTTP 400"));
    let long = "x".repeat(5_000);
    let bounded = Refusal::of_body(None, long.as_bytes(), "HTTP 400");
    assert_eq!(bounded.message.chars().count(), MAX_MESSAGE_CHARS + 1);
    let odd = br#"{"errors":{"$.accountId":["bad"],"x":["y"]}}"#;
    assert_eq!(
        Refusal::of_body(None, odd, "-").field.as_deref(),
        Some("accountId")
    );
    let hostile = br#"{"errors":{"<script>":["bad"]}}"#;
    assert_eq!(Refusal::of_body(None, hostile, "-").field, None);
}
