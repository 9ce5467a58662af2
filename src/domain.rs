//! The public API's own types: clean camelCase JSON, independent of the vendor's envelope.
//! Request types validate themselves before anything reaches the upstream.

use chrono::{DateTime, FixedOffset};
use serde::{Deserialize, Deserializer, Serialize};
use utoipa::ToSchema;

use crate::error::ApiError;

/// Longest accepted name.
pub const MAX_NAME_LEN: usize = 200;
/// Longest accepted description.
pub const MAX_DESCRIPTION_LEN: usize = 2_000;
/// Largest id accepted: the vendor's ids are 64-bit integers (a C# `long`), and so are ours
/// end to end (paths, bodies, the spec's `int64`). A JavaScript number holds them exactly
/// only up to 2^53 − 1; README "Ids" says what a JavaScript caller does above that.
pub const MAX_ID: i64 = i64::MAX;

/// An audience as the gateway presents it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(example = json!({
    "id": 1001, "name": "Newsletter subscribers", "description": "Opt-in newsletter list",
    "campaignId": 1, "campaignName": "Spring sale", "userId": 42,
    "type": "ONBOARDING", "typeId": 0, "activationStatus": "New", "activationStatusId": 0,
    "lifetimeStatus": "Active", "lifetimeStatusId": 1,
    "audienceState": "PROCESSING", "audienceStateId": 3, "canCreateLookalike": false, "hasSegments": false,
    "sourceAudienceId": null, "sourceAudienceTypeId": null, "tagCollection": null,
    "startDate": null, "endDate": null,
    "created": "2025-12-15T11:36:16.489708Z", "updated": "2025-12-15T11:36:16.489708Z",
    "dataUpdated": "2025-12-16T08:00:00Z", "hasCrmData": true
}))]
pub struct Audience {
    /// Audience id: a 64-bit integer (the vendor's ids go beyond 32 bits). A JavaScript
    /// number keeps it exactly only up to 2^53 − 1; a client that may see larger ids reads
    /// them as text (the `Location` of a create, or `JSON.parse` with a reviver that keeps
    /// the source text).
    pub id: i64,
    /// Audience name.
    pub name: String,
    /// Optional description.
    pub description: Option<String>,
    /// Campaign the audience belongs to.
    pub campaign_id: Option<i64>,
    /// Name of that campaign.
    pub campaign_name: Option<String>,
    /// Owner's user id.
    pub user_id: Option<i64>,
    /// Audience type, e.g. `ONBOARDING`; unknown vendor values pass through.
    #[serde(rename = "type")]
    pub audience_type: Option<String>,
    /// The vendor's numeric id of `type`.
    pub type_id: Option<i64>,
    /// Activation status, e.g. `New` or `Active`.
    pub activation_status: Option<String>,
    /// The vendor's numeric id of `activationStatus`.
    pub activation_status_id: Option<i64>,
    /// Lifetime status, e.g. `Active`.
    pub lifetime_status: Option<String>,
    /// The vendor's numeric id of `lifetimeStatus`.
    pub lifetime_status_id: Option<i64>,
    /// Data state, e.g. `NODATA` or `PROCESSING`.
    pub audience_state: Option<String>,
    /// The vendor's numeric id of `audienceState`.
    pub audience_state_id: Option<i64>,
    /// Whether a lookalike can be generated from it.
    pub can_create_lookalike: bool,
    /// Whether it has segments.
    pub has_segments: bool,
    /// Source audience for derived audiences.
    pub source_audience_id: Option<i64>,
    /// Type id of the source audience, for derived audiences.
    pub source_audience_type_id: Option<i64>,
    /// The vendor's tags or labels, passed through as the vendor sent them (any JSON).
    #[schema(value_type = Option<Object>, example = json!(["newsletter", "q1"]))]
    pub tag_collection: Option<serde_json::Value>,
    /// Activation window start.
    pub start_date: Option<String>,
    /// Activation window end.
    pub end_date: Option<String>,
    /// Creation time.
    pub created: Option<String>,
    /// Last update time.
    pub updated: Option<String>,
    /// Last data upload time.
    pub data_updated: Option<String>,
    /// Whether CRM data was uploaded (see `/insights` and `/uploads`).
    pub has_crm_data: bool,
}

/// Counts and match rate for one identifier type (EMAIL, PHONE, ...).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(example = json!({"type": "EMAIL", "total": 1000, "unique": 950, "matched": 600, "usableMatched": 580, "unmatched": 350, "matchRate": 0.63}))]
pub struct IdentifierStats {
    /// Identifier type, e.g. `EMAIL`.
    #[serde(rename = "type")]
    pub identifier_type: String,
    /// Values provided.
    pub total: u64,
    /// Unique values.
    pub unique: u64,
    /// Values matched to known identities.
    pub matched: u64,
    /// Usable (platform-eligible) matches.
    pub usable_matched: u64,
    /// Values not matched.
    pub unmatched: u64,
    /// Match rate, 0.0 to 1.0.
    pub match_rate: Option<f64>,
}

/// Insights of an audience, derived from its CRM data.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(example = json!({"audienceId": 1001, "state": "READY", "size": 1000, "uploads": 2, "lastUpload": "2025-12-16T08:00:00Z",
    "identifiers": [{"type": "EMAIL", "total": 1000, "unique": 950, "matched": 600, "usableMatched": 580, "unmatched": 350, "matchRate": 0.63}]}))]
pub struct Insights {
    /// Audience id.
    pub audience_id: i64,
    /// Insights state, e.g. `READY` or `PENDING`; `NO_DATA` without CRM data.
    pub state: String,
    /// Rows in the uploaded CRM data.
    pub size: u64,
    /// Number of upload events.
    pub uploads: u64,
    /// Time of the newest upload.
    pub last_upload: Option<String>,
    /// Counts and match rates per identifier type, from the newest upload.
    pub identifiers: Vec<IdentifierStats>,
}

/// One CRM upload event.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(example = json!({"uploadedAt": "2025-12-16T08:00:00Z", "created": "2025-12-16T08:00:03Z", "mode": "opt-in", "totalRows": 1000,
    "identifiers": [{"type": "EMAIL", "total": 1000, "unique": 950, "matched": 600, "usableMatched": 580, "unmatched": 350, "matchRate": 0.63}]}))]
pub struct UploadEvent {
    /// The upload date the vendor files the event under.
    pub uploaded_at: String,
    /// When the event was recorded.
    pub created: Option<String>,
    /// Consent mode, e.g. `opt-in`.
    pub mode: Option<String>,
    /// Rows processed.
    pub total_rows: u64,
    /// Counts and match rates per identifier type.
    pub identifiers: Vec<IdentifierStats>,
}

/// Upload history of an audience, newest first.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(example = json!({"audienceId": 1001, "totalEvents": 1, "uploads": [{"uploadedAt": "2025-12-16T08:00:00Z", "created": "2025-12-16T08:00:03Z", "mode": "opt-in", "totalRows": 1000, "identifiers": []}]}))]
pub struct Uploads {
    /// Audience id.
    pub audience_id: i64,
    /// Events the vendor counts.
    pub total_events: u64,
    /// Upload events, newest first.
    pub uploads: Vec<UploadEvent>,
}

/// A platform account an audience can be activated on. Never carries an access token.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(example = json!({"id": 501, "name": "Acme Meta", "platformId": 1, "platformName": "meta", "platformDisplayName": "Meta",
    "agencyId": 7, "agencyName": "Acme Agency", "accountTypeId": 1, "accountTypeName": "Advertiser", "advertiserId": "act_1234",
    "clientId": "cl-501", "defaultSegmentPricingCategoryId": null, "created": "2025-01-02T10:00:00Z", "updated": "2025-06-01T10:00:00Z"}))]
pub struct PlatformAccount {
    /// Account id (the `accountId` of an activation).
    pub id: i64,
    /// Account name.
    pub name: Option<String>,
    /// Platform id.
    pub platform_id: Option<i64>,
    /// Platform name.
    pub platform_name: Option<String>,
    /// Platform display name.
    pub platform_display_name: Option<String>,
    /// Agency id.
    pub agency_id: Option<i64>,
    /// Agency name.
    pub agency_name: Option<String>,
    /// Account type id.
    pub account_type_id: Option<i64>,
    /// Account type name.
    pub account_type_name: Option<String>,
    /// Advertiser id on the platform.
    pub advertiser_id: Option<String>,
    /// Client id on the platform.
    pub client_id: Option<String>,
    /// Default segment pricing category.
    pub default_segment_pricing_category_id: Option<i64>,
    /// Creation time.
    pub created: Option<String>,
    /// Last update time.
    pub updated: Option<String>,
}

/// The list of platform accounts.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(example = json!({"items": [{"id": 501, "name": "Acme Meta", "platformId": 1, "platformName": "meta", "platformDisplayName": "Meta",
    "agencyId": 7, "agencyName": "Acme Agency", "accountTypeId": 1, "accountTypeName": "Advertiser", "advertiserId": "act_1234",
    "clientId": "cl-501", "defaultSegmentPricingCategoryId": null, "created": "2025-01-02T10:00:00Z", "updated": "2025-06-01T10:00:00Z"}]}))]
pub struct PlatformAccountList {
    /// The accounts.
    pub items: Vec<PlatformAccount>,
}

/// A campaign.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(example = json!({"id": 12, "name": "Spring sale", "created": "2025-12-15T11:36:16Z"}))]
pub struct Campaign {
    /// Campaign id.
    pub id: i64,
    /// Campaign name.
    pub name: String,
    /// Creation time, when the vendor reports it.
    pub created: Option<String>,
}

/// The result of an activation.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(example = json!({"audienceId": 1001, "accountId": 501, "flowId": "7d9f8b52-1c1e-4a43-9a53-58f2c2d7a0b1", "segmentId": 88001}))]
pub struct Activation {
    /// The activated audience.
    pub audience_id: i64,
    /// The platform account.
    pub account_id: i64,
    /// Activation flow id (a GUID) for tracking.
    pub flow_id: String,
    /// Segment created on the platform.
    pub segment_id: i64,
}

/// An activation made through the gateway, as its ledger keeps it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(example = json!({"audienceId": 1001, "flowId": "7d9f8b52-1c1e-4a43-9a53-58f2c2d7a0b1", "segmentId": 88001,
    "accountId": 501, "accountName": "Acme Meta", "name": "Newsletter - Meta", "description": "Q1 push",
    "startDate": "2026-01-01T00:00:00Z", "endDate": "2026-03-31T23:59:59Z", "activatedAt": "2025-12-16T09:30:00.123456Z",
    "sub": "alice", "clientId": null, "requestId": "3f1c1f1e-6a4b-4f0e-9a55-2d1f7f0f9c1a",
    "idempotencyKey": "5b0f3e0c-8f7e-4a58-9d4e-0b7e1c2d3f40", "audienceDeletedAt": null}))]
pub struct ActivationRecord {
    /// The activated audience.
    pub audience_id: i64,
    /// The vendor's activation flow id.
    pub flow_id: String,
    /// Segment created on the platform.
    pub segment_id: i64,
    /// The platform account.
    pub account_id: i64,
    /// The platform account's name when the gateway knew it at activation time.
    pub account_name: Option<String>,
    /// Segment name.
    pub name: String,
    /// Segment description.
    pub description: String,
    /// Start of the activation, RFC 3339.
    pub start_date: String,
    /// End of the activation, RFC 3339.
    pub end_date: String,
    /// When the vendor accepted the activation (RFC 3339, UTC, microseconds).
    pub activated_at: String,
    /// The caller's `sub` claim.
    pub sub: String,
    /// The caller's client id claim, for service tokens.
    pub client_id: Option<String>,
    /// Request id of the activation (`X-Request-Id`).
    pub request_id: String,
    /// The `Idempotency-Key` the activation was sent with.
    pub idempotency_key: Option<String>,
    /// When the audience was deleted through the gateway; the history is kept.
    pub audience_deleted_at: Option<String>,
}

/// One page of an audience's activation history, newest first.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(example = json!({"items": [{"audienceId": 1001, "flowId": "7d9f8b52-1c1e-4a43-9a53-58f2c2d7a0b1", "segmentId": 88001,
    "accountId": 501, "accountName": "Acme Meta", "name": "Newsletter - Meta", "description": "Q1 push",
    "startDate": "2026-01-01T00:00:00Z", "endDate": "2026-03-31T23:59:59Z", "activatedAt": "2025-12-16T09:30:00.123456Z",
    "sub": "alice", "clientId": null, "requestId": "3f1c1f1e-6a4b-4f0e-9a55-2d1f7f0f9c1a",
    "idempotencyKey": null, "audienceDeletedAt": null}],
    "nextCursor": "djE6MTc2NTg3NzQwMDEyMzQ1Njo3ZDlmOGI1Mi0xYzFlLTRhNDMtOWE1My01OGYyYzJkN2EwYjE"}))]
pub struct ActivationHistory {
    /// Activations, newest first.
    pub items: Vec<ActivationRecord>,
    /// Pass as `cursor` to get the next page; absent on the last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

/// Body of `POST /v1/campaigns`.
#[derive(Debug, Clone, Deserialize, Serialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schema(example = json!({"name": "Spring sale"}))]
pub struct NewCampaign {
    /// Campaign name, 1 to 200 characters.
    pub name: String,
}

/// Body of `POST /v1/audiences`.
#[derive(Debug, Clone, Deserialize, Serialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schema(example = json!({"name": "Newsletter subscribers", "description": "Opt-in newsletter list", "campaignId": 1}))]
pub struct NewAudience {
    /// Audience name, 1 to 200 characters.
    pub name: String,
    /// Optional description, up to 2000 characters.
    #[serde(default)]
    #[schema(max_length = 2000)]
    pub description: Option<String>,
    /// Campaign to create the audience in.
    #[serde(deserialize_with = "integral")]
    #[schema(minimum = 1, maximum = 9_223_372_036_854_775_807_i64)]
    pub campaign_id: i64,
}

/// Body of `PATCH /v1/audiences/{id}`.
#[derive(Debug, Clone, Deserialize, Serialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schema(example = json!({"description": "Refreshed weekly"}))]
pub struct AudiencePatch {
    /// New name, 1 to 200 characters; the current name is kept when absent or null.
    #[serde(default)]
    pub name: Option<String>,
    /// New description, up to 2000 characters; the current one is kept when absent or null.
    #[serde(default)]
    #[schema(max_length = 2000)]
    pub description: Option<String>,
}

/// Body of `POST /v1/audiences/{id}/activations`.
#[derive(Debug, Clone, Deserialize, Serialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schema(example = json!({"accountId": 501, "name": "Newsletter - Meta", "description": "Q1 push",
    "startDate": "2026-01-01T00:00:00Z", "endDate": "2026-03-31T23:59:59Z"}))]
pub struct NewActivation {
    /// Platform account to activate on (see `/v1/platform-accounts`).
    #[serde(deserialize_with = "integral")]
    #[schema(minimum = 1, maximum = 9_223_372_036_854_775_807_i64)]
    pub account_id: i64,
    /// Segment name, 1 to 200 characters.
    pub name: String,
    /// Segment description, up to 2000 characters.
    #[schema(max_length = 2000)]
    pub description: String,
    /// Start of the activation, RFC 3339.
    #[schema(format = DateTime)]
    pub start_date: String,
    /// End of the activation, RFC 3339, after `startDate`.
    #[schema(format = DateTime)]
    pub end_date: String,
}

/// Reads an integer also when written with a zero fraction (`5.0`), as JSON Schema's
/// `integer` (and so our OpenAPI document) admits it.
fn integral<'de, D: Deserializer<'de>>(deserializer: D) -> Result<i64, D::Error> {
    let n = serde_json::Number::deserialize(deserializer)?;
    if let Some(i) = n.as_i64() {
        return Ok(i);
    }
    match n.as_f64() {
        // The bounds keep the cast exact; anything outside fails `check_id` anyway.
        Some(f) if f.fract() == 0.0 && f.abs() < 9.0e15 => Ok(f as i64),
        _ => Err(serde::de::Error::custom(format!(
            "invalid type: {n}, expected an integer"
        ))),
    }
}

/// Checks an id taken from a path or body.
pub fn check_id(field: &str, id: i64) -> Result<i64, ApiError> {
    if (1..=MAX_ID).contains(&id) {
        Ok(id)
    } else {
        Err(ApiError::field(
            field,
            format!("must be an integer between 1 and {MAX_ID}"),
        ))
    }
}

/// Trims a name and checks it is neither blank nor too long.
pub fn check_name(field: &str, name: &str) -> Result<String, ApiError> {
    let name = name.trim();
    if name.is_empty() {
        return Err(ApiError::field(field, "must not be blank"));
    }
    if name.chars().count() > MAX_NAME_LEN {
        return Err(ApiError::field(
            field,
            format!("must be at most {MAX_NAME_LEN} characters"),
        ));
    }
    if name.chars().any(char::is_control) {
        return Err(ApiError::field(
            field,
            "must not contain control characters",
        ));
    }
    Ok(name.to_string())
}

/// Checks the length of a description.
pub fn check_description(field: &str, text: &str) -> Result<String, ApiError> {
    if text.chars().count() > MAX_DESCRIPTION_LEN {
        return Err(ApiError::field(
            field,
            format!("must be at most {MAX_DESCRIPTION_LEN} characters"),
        ));
    }
    Ok(text.to_string())
}

/// Parses an RFC 3339 date-time.
pub fn check_date(field: &str, value: &str) -> Result<DateTime<FixedOffset>, ApiError> {
    DateTime::parse_from_rfc3339(value.trim()).map_err(|_| {
        ApiError::field(
            field,
            "must be an RFC 3339 date-time, e.g. 2026-01-01T00:00:00Z",
        )
    })
}

impl NewCampaign {
    /// Validates and normalises the body.
    pub fn validated(self) -> Result<Self, ApiError> {
        Ok(Self {
            name: check_name("name", &self.name)?,
        })
    }
}

impl NewAudience {
    /// Validates and normalises the body.
    pub fn validated(self) -> Result<Self, ApiError> {
        Ok(Self {
            name: check_name("name", &self.name)?,
            description: self
                .description
                .map(|d| check_description("description", &d))
                .transpose()?,
            campaign_id: check_id("campaignId", self.campaign_id)?,
        })
    }
}

impl AudiencePatch {
    /// Validates and normalises the body; an empty patch is refused.
    pub fn validated(self) -> Result<Self, ApiError> {
        if self.name.is_none() && self.description.is_none() {
            return Err(ApiError::field(
                "name",
                "give name or description to change",
            ));
        }
        Ok(Self {
            name: self.name.map(|n| check_name("name", &n)).transpose()?,
            description: self
                .description
                .map(|d| check_description("description", &d))
                .transpose()?,
        })
    }
}

impl NewActivation {
    /// Validates and normalises the body.
    pub fn validated(self) -> Result<Self, ApiError> {
        let start = check_date("startDate", &self.start_date)?;
        let end = check_date("endDate", &self.end_date)?;
        if end <= start {
            return Err(ApiError::field("endDate", "must be after startDate"));
        }
        Ok(Self {
            account_id: check_id("accountId", self.account_id)?,
            name: check_name("name", &self.name)?,
            description: check_description("description", &self.description)?,
            start_date: start.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true),
            end_date: end.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn activation(start: &str, end: &str) -> NewActivation {
        NewActivation {
            account_id: 501,
            name: "seg".into(),
            description: "d".into(),
            start_date: start.into(),
            end_date: end.into(),
        }
    }

    #[test]
    fn names_are_trimmed_and_bounded() {
        assert_eq!(check_name("name", "  a  ").unwrap(), "a");
        assert!(check_name("name", "   ").is_err());
        assert!(check_name("name", &"x".repeat(MAX_NAME_LEN + 1)).is_err());
        assert!(check_name("name", "a\u{0}b").is_err());
    }

    #[test]
    fn ids_must_be_positive_and_in_range() {
        assert!(check_id("id", 0).is_err());
        assert!(check_id("id", -5).is_err());
        assert!(check_id("id", i64::MIN).is_err());
        assert_eq!(check_id("id", 7).unwrap(), 7);
        assert_eq!(check_id("id", 3_000_000_001).unwrap(), 3_000_000_001);
        assert_eq!(check_id("id", i64::MAX).unwrap(), i64::MAX);
    }

    #[test]
    fn ids_may_carry_a_zero_fraction() {
        let body = |id: &str| format!(r#"{{"name": "n", "campaignId": {id}}}"#);
        let parse =
            |id: &str| serde_json::from_str::<NewAudience>(&body(id)).map(|a| a.campaign_id);
        assert_eq!(parse("12").unwrap(), 12);
        assert_eq!(parse("12.0").unwrap(), 12);
        assert_eq!(parse("1e3").unwrap(), 1000);
        assert!(parse("12.5").is_err());
        assert!(parse("\"12\"").is_err());
        assert!(parse("1e300").is_err());
    }

    #[test]
    fn activation_dates_are_rfc3339_and_ordered() {
        assert!(activation("2026-01-01T00:00:00Z", "2026-02-01T00:00:00Z")
            .validated()
            .is_ok());
        let err = activation("2026-02-01T00:00:00Z", "2026-01-01T00:00:00Z")
            .validated()
            .unwrap_err();
        assert!(err.to_string().starts_with("endDate"));
        let err = activation("yesterday", "2026-01-01T00:00:00Z")
            .validated()
            .unwrap_err();
        assert!(err.to_string().starts_with("startDate"));
    }

    #[test]
    fn empty_patch_is_refused() {
        let patch = AudiencePatch {
            name: None,
            description: None,
        };
        assert!(patch.validated().is_err());
    }
}
