//! Everything the gateway knows about the vendor's wire format: paths, request bodies, the
//! envelope and the response DTOs, and their conversion to the public types. A correction to
//! the vendor contract (CONTRACT.md) is a change in this file only.

use std::collections::BTreeMap;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::domain::{
    Activation, Audience, Campaign, IdentifierStats, Insights, PlatformAccount, UploadEvent,
    Uploads,
};

/// Name of the vendor's session cookie.
pub const SESSION_COOKIE: &str = "digitalAudience";

/// One vendor operation: its method, path and whether repeating it is harmless.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Operation {
    Login,
    CreateCampaign,
    LoadPlatformAccounts,
    CreateAudience,
    LoadAudience,
    UpdateAudience,
    DeleteAudience,
    ActivateAudience,
}

impl Operation {
    /// Every operation, for metrics registration.
    pub const ALL: [Operation; 8] = [
        Operation::Login,
        Operation::CreateCampaign,
        Operation::LoadPlatformAccounts,
        Operation::CreateAudience,
        Operation::LoadAudience,
        Operation::UpdateAudience,
        Operation::DeleteAudience,
        Operation::ActivateAudience,
    ];

    /// Stable name used in logs and metric labels.
    pub fn name(self) -> &'static str {
        match self {
            Operation::Login => "login",
            Operation::CreateCampaign => "createCampaign",
            Operation::LoadPlatformAccounts => "loadPlatformAccounts",
            Operation::CreateAudience => "createAudience",
            Operation::LoadAudience => "loadAudience",
            Operation::UpdateAudience => "updateAudience",
            Operation::DeleteAudience => "deleteAudience",
            Operation::ActivateAudience => "activateAudience",
        }
    }

    /// HTTP method of the vendor call.
    pub fn method(self) -> reqwest::Method {
        match self {
            Operation::LoadPlatformAccounts | Operation::LoadAudience => reqwest::Method::GET,
            Operation::DeleteAudience => reqwest::Method::DELETE,
            _ => reqwest::Method::POST,
        }
    }

    /// Path of the vendor call (relative to the base URL).
    pub fn path(self, id: Option<i64>) -> String {
        match self {
            Operation::Login => "/account/login".into(),
            Operation::CreateCampaign => "/campaign/createcampaign".into(),
            Operation::LoadPlatformAccounts => "/organisation/loadplatformaccounts".into(),
            Operation::CreateAudience => "/audience/createcrmaudience".into(),
            Operation::LoadAudience => format!("/audience/loadAudienceById/{}", id.unwrap_or(0)),
            Operation::UpdateAudience => "/audience/update".into(),
            Operation::DeleteAudience => "/audience/delete".into(),
            Operation::ActivateAudience => "/audience/activate".into(),
        }
    }

    /// Whether the call may be repeated after a failure that happened after sending.
    pub fn is_safe(self) -> bool {
        matches!(
            self,
            Operation::Login | Operation::LoadAudience | Operation::LoadPlatformAccounts
        )
    }
}

/// `POST /account/login` body.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LoginBody<'a> {
    pub user_name: &'a str,
    pub password: &'a str,
}

/// `POST /campaign/createcampaign` body.
#[derive(Serialize)]
pub struct CreateCampaignBody<'a> {
    pub name: &'a str,
}

/// `POST /audience/createcrmaudience` body.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CreateAudienceBody<'a> {
    pub name: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<&'a str>,
    pub campaign_id: i64,
}

/// `POST /audience/update` body.
#[derive(Serialize)]
pub struct UpdateAudienceBody<'a> {
    pub id: i64,
    pub name: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<&'a str>,
}

/// `DELETE /audience/delete` body (assumed; the reference shows none).
#[derive(Serialize)]
pub struct DeleteAudienceBody {
    pub id: i64,
}

/// `POST /audience/activate` body.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ActivateBody<'a> {
    pub audience_id: i64,
    pub account_id: i64,
    pub name: &'a str,
    pub description: &'a str,
    pub start_date: &'a str,
    pub end_date: &'a str,
}

/// The vendor's envelope around every response.
#[derive(Deserialize)]
pub struct Envelope<T> {
    pub data: Option<T>,
    pub status: Option<EnvelopeStatus>,
    pub success: Option<bool>,
}

/// The envelope without its `data`, which serde skips without building anything.
#[derive(Deserialize)]
struct EnvelopeHead {
    status: Option<EnvelopeStatus>,
    success: Option<bool>,
}

/// `status` of the envelope.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EnvelopeStatus {
    pub status_code: Option<i64>,
    pub message: Option<String>,
}

/// What an envelope says, once decoded.
#[derive(Debug)]
pub enum Decoded<T> {
    Ok(T),
    /// `success: false` or a non-zero `statusCode`, even on HTTP 200.
    Failed {
        status_code: i64,
        message: Option<String>,
    },
    /// Not JSON, or not the envelope shape.
    Malformed(String),
}

/// The failure an envelope reports (status code and message), if any.
fn failure_of(
    status: Option<EnvelopeStatus>,
    success: Option<bool>,
) -> Result<Option<(i64, Option<String>)>, String> {
    let status_code = status.as_ref().and_then(|s| s.status_code).unwrap_or(0);
    match success {
        Some(true) if status_code == 0 => Ok(None),
        Some(_) => Ok(Some((
            if status_code == 0 { -1 } else { status_code },
            status.and_then(|s| s.message),
        ))),
        None => Err("envelope without `success`".into()),
    }
}

/// The failure an envelope reports, read without decoding `data`; `Err` when the body is
/// no envelope.
fn failure(body: &[u8]) -> Result<Option<(i64, Option<String>)>, String> {
    let head: EnvelopeHead =
        serde_json::from_slice(body).map_err(|e| format!("not an envelope: {e}"))?;
    failure_of(head.status, head.success)
}

/// Decodes an envelope body: `success: false` or a non-zero status code is a failure.
///
/// One pass straight into `T` (no intermediate `serde_json::Value`); only when that fails
/// is the body read again, without `data`, to tell a refusal from a malformed answer.
pub fn decode<T: DeserializeOwned>(body: &[u8]) -> Decoded<T> {
    let failed = |(status_code, message)| Decoded::Failed {
        status_code,
        message,
    };
    match serde_json::from_slice::<Envelope<T>>(body) {
        Ok(env) => match failure_of(env.status, env.success) {
            Err(why) => Decoded::Malformed(why),
            Ok(Some(f)) => failed(f),
            Ok(None) => match env.data {
                Some(data) => Decoded::Ok(data),
                None => Decoded::Malformed("envelope without `data`".into()),
            },
        },
        Err(e) => match failure(body) {
            Err(why) => Decoded::Malformed(why),
            Ok(Some(f)) => failed(f),
            Ok(None) => Decoded::Malformed(format!("unexpected `data`: {e}")),
        },
    }
}

/// Envelope status codes the gateway interprets (assumed; see CONTRACT.md).
pub mod status_codes {
    /// The entity does not exist.
    pub const NOT_FOUND: i64 = 404;
    /// The session is missing or expired.
    pub const UNAUTHORIZED: i64 = 401;
    /// The session may not do this.
    pub const FORBIDDEN: i64 = 403;
}

/// The vendor's audience object; unknown fields are ignored, unknown enum values kept.
///
/// `C` is what `crmData` is read into: [`CrmDataDto`] for insights and uploads, or
/// [`serde::de::IgnoredAny`] for a read that needs only the audience itself (the upload
/// history, most of the answer, is then skipped without building anything).
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AudienceDto<C = CrmDataDto> {
    pub id: i64,
    pub name: Option<String>,
    pub description: Option<String>,
    pub user_id: Option<i64>,
    pub campaign_id: Option<i64>,
    pub campaign_name: Option<String>,
    pub created: Option<String>,
    pub updated: Option<String>,
    pub start_date: Option<String>,
    pub end_date: Option<String>,
    pub data_updated: Option<String>,
    pub activation_status: Option<String>,
    pub lifetime_status: Option<String>,
    pub audience_state: Option<String>,
    #[serde(rename = "type")]
    pub audience_type: Option<String>,
    pub source_audience_id: Option<i64>,
    #[serde(default)]
    pub can_create_lookalike: Option<bool>,
    #[serde(default)]
    pub has_segments: Option<bool>,
    pub crm_data: Option<C>,
}

/// `crmData` of an audience.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CrmDataDto {
    pub insights_state: Option<String>,
    pub size: Option<u64>,
    pub history: Option<CrmHistoryDto>,
}

/// `crmData.history`.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CrmHistoryDto {
    pub total_events: Option<u64>,
    #[serde(default)]
    pub history: BTreeMap<String, UploadEventDto>,
}

/// One upload event of `crmData.history.history`.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UploadEventDto {
    pub mode: Option<String>,
    pub total_rows: Option<u64>,
    pub created: Option<String>,
    #[serde(default)]
    pub data_set: BTreeMap<String, DataSetCountsDto>,
    #[serde(default)]
    pub match_rates: BTreeMap<String, f64>,
}

/// Counts per identifier type.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub struct DataSetCountsDto {
    #[serde(default)]
    pub total: u64,
    #[serde(default)]
    pub unique: u64,
    #[serde(default, rename = "MATCH")]
    pub matched: u64,
    #[serde(default, rename = "UMATCH")]
    pub usable_matched: u64,
    #[serde(default, rename = "NOMATCH")]
    pub unmatched: u64,
}

/// The vendor's campaign (assumed `{id, name, ...}`).
#[derive(Debug, Clone, Deserialize)]
pub struct CampaignDto {
    pub id: i64,
    pub name: Option<String>,
    pub created: Option<String>,
}

/// The vendor's activation result.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ActivationDto {
    pub flow_id: String,
    pub segment_id: i64,
}

/// The vendor's platform account. `accessToken` is deliberately not a field: it is never
/// even read into memory, so it cannot be passed on.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PlatformAccountDto {
    pub id: i64,
    pub name: Option<String>,
    pub platform_id: Option<i64>,
    pub platform_name: Option<String>,
    pub platform_display_name: Option<String>,
    pub agency_id: Option<i64>,
    pub agency_name: Option<String>,
    pub account_type_id: Option<i64>,
    pub account_type_name: Option<String>,
    pub advertiser_id: Option<Value>,
    pub client_id: Option<Value>,
    pub default_segment_pricing_category_id: Option<i64>,
    pub created: Option<String>,
    pub updated: Option<String>,
}

/// Ids and free-form values the vendor may send as numbers or strings.
fn text(v: Option<Value>) -> Option<String> {
    match v? {
        Value::Null => None,
        Value::String(s) => Some(s),
        other => Some(other.to_string()),
    }
}

impl From<PlatformAccountDto> for PlatformAccount {
    fn from(d: PlatformAccountDto) -> Self {
        PlatformAccount {
            id: d.id,
            name: d.name,
            platform_id: d.platform_id,
            platform_name: d.platform_name,
            platform_display_name: d.platform_display_name,
            agency_id: d.agency_id,
            agency_name: d.agency_name,
            account_type_id: d.account_type_id,
            account_type_name: d.account_type_name,
            advertiser_id: text(d.advertiser_id),
            client_id: text(d.client_id),
            default_segment_pricing_category_id: d.default_segment_pricing_category_id,
            created: d.created,
            updated: d.updated,
        }
    }
}

impl From<CampaignDto> for Campaign {
    fn from(d: CampaignDto) -> Self {
        Campaign {
            id: d.id,
            name: d.name.unwrap_or_default(),
            created: d.created,
        }
    }
}

impl ActivationDto {
    /// The public activation result.
    pub fn into_activation(self, audience_id: i64, account_id: i64) -> Activation {
        Activation {
            audience_id,
            account_id,
            flow_id: self.flow_id,
            segment_id: self.segment_id,
        }
    }
}

fn identifiers(event: &UploadEventDto) -> Vec<IdentifierStats> {
    event
        .data_set
        .iter()
        .map(|(kind, c)| IdentifierStats {
            identifier_type: kind.clone(),
            total: c.total,
            unique: c.unique,
            matched: c.matched,
            usable_matched: c.usable_matched,
            unmatched: c.unmatched,
            match_rate: event.match_rates.get(kind).copied(),
        })
        .collect()
}

impl<C> AudienceDto<C> {
    /// The public audience; takes the vendor object apart instead of copying its strings.
    pub fn into_audience(self) -> Audience {
        Audience {
            id: self.id,
            name: self.name.unwrap_or_default(),
            description: self.description,
            campaign_id: self.campaign_id,
            campaign_name: self.campaign_name,
            user_id: self.user_id,
            audience_type: self.audience_type,
            activation_status: self.activation_status,
            lifetime_status: self.lifetime_status,
            audience_state: self.audience_state,
            can_create_lookalike: self.can_create_lookalike.unwrap_or(false),
            has_segments: self.has_segments.unwrap_or(false),
            source_audience_id: self.source_audience_id,
            start_date: self.start_date,
            end_date: self.end_date,
            created: self.created,
            updated: self.updated,
            data_updated: self.data_updated,
            has_crm_data: self.crm_data.is_some(),
        }
    }
}

impl AudienceDto {
    /// Upload events, newest first (by their upload date key).
    fn events_newest_first(&self) -> Vec<(&String, &UploadEventDto)> {
        let mut events: Vec<_> = self
            .crm_data
            .iter()
            .filter_map(|c| c.history.as_ref())
            .flat_map(|h| h.history.iter())
            .collect();
        events.sort_by(|a, b| sort_key(b.0).cmp(&sort_key(a.0)));
        events
    }

    /// Insights derived from `crmData` (the newest upload gives the per-identifier counts).
    pub fn to_insights(&self) -> Insights {
        let events = self.events_newest_first();
        let crm = self.crm_data.as_ref();
        Insights {
            audience_id: self.id,
            state: crm
                .and_then(|c| c.insights_state.clone())
                .unwrap_or_else(|| "NO_DATA".into()),
            size: crm.and_then(|c| c.size).unwrap_or(0),
            uploads: crm
                .and_then(|c| c.history.as_ref())
                .and_then(|h| h.total_events)
                .unwrap_or(events.len() as u64),
            last_upload: events.first().map(|(d, _)| (*d).clone()),
            identifiers: events
                .first()
                .map(|(_, e)| identifiers(e))
                .unwrap_or_default(),
        }
    }

    /// Upload events derived from `crmData.history`, newest first.
    pub fn to_uploads(&self) -> Uploads {
        let events = self.events_newest_first();
        Uploads {
            audience_id: self.id,
            total_events: self
                .crm_data
                .as_ref()
                .and_then(|c| c.history.as_ref())
                .and_then(|h| h.total_events)
                .unwrap_or(events.len() as u64),
            uploads: events
                .into_iter()
                .map(|(date, e)| UploadEvent {
                    uploaded_at: date.clone(),
                    created: e.created.clone(),
                    mode: e.mode.clone(),
                    total_rows: e.total_rows.unwrap_or(0),
                    identifiers: identifiers(e),
                })
                .collect(),
        }
    }
}

/// Orders upload date keys by time when they parse, else as text.
fn sort_key(date: &str) -> (i64, &str) {
    let ts = chrono::DateTime::parse_from_rfc3339(date)
        .map(|d| d.timestamp_micros())
        .or_else(|_| {
            chrono::NaiveDateTime::parse_from_str(date, "%Y-%m-%dT%H:%M:%S%.f")
                .map(|d| d.and_utc().timestamp_micros())
        })
        .unwrap_or(i64::MIN);
    (ts, date)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn success_false_on_200_is_a_failure() {
        let body = br#"{"data":null,"status":{"statusCode":404,"message":"Audience 9 not found"},"success":false}"#;
        match decode::<AudienceDto>(body) {
            Decoded::Failed {
                status_code,
                message,
            } => {
                assert_eq!(status_code, 404);
                assert_eq!(message.as_deref(), Some("Audience 9 not found"));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn nonzero_status_code_with_success_true_is_a_failure() {
        let body = br#"{"data":true,"status":{"statusCode":7,"message":null},"success":true}"#;
        assert!(matches!(
            decode::<bool>(body),
            Decoded::Failed { status_code: 7, .. }
        ));
    }

    #[test]
    fn an_expired_session_is_read_whatever_the_data() {
        // `data` that is not an audience must not hide the status (the client renews on 401).
        let expired =
            br#"{"data":{"x":[1,2,{"y":null}]},"status":{"statusCode":401},"success":false}"#;
        assert!(matches!(
            decode::<AudienceDto>(expired),
            Decoded::Failed {
                status_code: status_codes::UNAUTHORIZED,
                ..
            }
        ));
        let ok = br#"{"data":{"id":1},"status":{"statusCode":0},"success":true}"#;
        assert!(matches!(decode::<AudienceDto>(ok), Decoded::Ok(a) if a.id == 1));
    }

    #[test]
    fn malformed_bodies_are_reported() {
        assert!(matches!(decode::<bool>(b"<html>"), Decoded::Malformed(_)));
        assert!(matches!(
            decode::<bool>(br#"{"data":true}"#),
            Decoded::Malformed(_)
        ));
        assert!(matches!(
            decode::<i64>(br#"{"data":"x","status":{"statusCode":0},"success":true}"#),
            Decoded::Malformed(_)
        ));
    }

    #[test]
    fn access_token_is_never_read() {
        let body = br#"{"data":[{"id":1,"name":"a","accessToken":"EAAB-secret"}],"status":{"statusCode":0,"message":null},"success":true}"#;
        let Decoded::Ok(list) = decode::<Vec<PlatformAccountDto>>(body) else {
            panic!("decodes")
        };
        let public: Vec<PlatformAccount> = list.into_iter().map(Into::into).collect();
        let json = serde_json::to_string(&public).unwrap();
        assert!(!json.contains("EAAB"), "{json}");
        assert!(!json.contains("accessToken"), "{json}");
    }

    #[test]
    fn an_audience_only_read_skips_the_history_and_gives_the_same_audience() {
        let body = br#"{"id":5,"name":"a","type":"CRM","crmData":{"insightsState":"READY","history":{"totalEvents":1,"history":{
            "2025-01-01T00:00:00Z":{"mode":"opt-in","totalRows":4,"dataSet":{"EMAIL":{"TOTAL":4}},"matchRates":{"EMAIL":0.25}}}}}}"#;
        let full: AudienceDto = serde_json::from_slice(body).unwrap();
        let summary: AudienceDto<serde::de::IgnoredAny> = serde_json::from_slice(body).unwrap();
        assert!(summary.clone().into_audience().has_crm_data);
        assert_eq!(summary.into_audience(), full.into_audience());
        let without: AudienceDto<serde::de::IgnoredAny> =
            serde_json::from_slice(br#"{"id":6,"crmData":null}"#).unwrap();
        assert!(!without.into_audience().has_crm_data);
    }

    #[test]
    fn uploads_are_newest_first_and_insights_use_the_newest() {
        let body = br#"{"id":5,"name":"a","crmData":{"insightsState":"READY","size":10,"history":{"totalEvents":2,"history":{
            "2025-01-01T00:00:00Z":{"mode":"opt-in","totalRows":4,"dataSet":{"EMAIL":{"TOTAL":4,"UNIQUE":4,"MATCH":1,"UMATCH":1,"NOMATCH":3}},"matchRates":{"EMAIL":0.25}},
            "2025-03-01T00:00:00Z":{"mode":"opt-in","totalRows":6,"dataSet":{"EMAIL":{"TOTAL":6,"UNIQUE":6,"MATCH":3,"UMATCH":2,"NOMATCH":3}},"matchRates":{"EMAIL":0.5}}}}}}"#;
        let dto: AudienceDto = serde_json::from_slice(body).unwrap();
        let uploads = dto.to_uploads();
        assert_eq!(uploads.uploads[0].uploaded_at, "2025-03-01T00:00:00Z");
        assert_eq!(uploads.uploads[1].total_rows, 4);
        let insights = dto.to_insights();
        assert_eq!(insights.state, "READY");
        assert_eq!(insights.identifiers[0].matched, 3);
        assert_eq!(insights.identifiers[0].match_rate, Some(0.5));
        assert!(dto.into_audience().has_crm_data);
    }
}
