//! The vendor's data objects as it sends them, read tolerantly ([`super::lenient`]), and
//! what each operation reads its answer's `data` into ([`Payload`]).

use std::collections::BTreeMap;

use serde::de::{DeserializeOwned, IgnoredAny};
use serde::{Deserialize, Deserializer};
use serde_json::value::RawValue;
use serde_json::Value;

use super::envelope::{unreadable_path, Payload};
use super::lenient;

/// The vendor's audience object. Unknown fields are ignored, unknown enum values kept.
///
/// `C` is what `crmData` is read into: [`Crm`] for insights and uploads, or
/// [`IgnoredAny`] for a read that needs only the audience itself (the upload history, most
/// of the answer, is then skipped without building anything).
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AudienceDto<C = Crm> {
    #[serde(deserialize_with = "lenient::i64_required")]
    pub id: i64,
    #[serde(default, deserialize_with = "lenient::opt_text")]
    pub name: Option<String>,
    #[serde(default, deserialize_with = "lenient::opt_text")]
    pub description: Option<String>,
    #[serde(default, deserialize_with = "lenient::opt_i64")]
    pub user_id: Option<i64>,
    #[serde(default, deserialize_with = "lenient::opt_i64")]
    pub campaign_id: Option<i64>,
    #[serde(default, deserialize_with = "lenient::opt_text")]
    pub campaign_name: Option<String>,
    #[serde(default, deserialize_with = "lenient::opt_date")]
    pub created: Option<String>,
    #[serde(default, deserialize_with = "lenient::opt_date")]
    pub updated: Option<String>,
    #[serde(default, deserialize_with = "lenient::opt_date")]
    pub start_date: Option<String>,
    #[serde(default, deserialize_with = "lenient::opt_date")]
    pub end_date: Option<String>,
    #[serde(default, deserialize_with = "lenient::opt_date")]
    pub data_updated: Option<String>,
    #[serde(default, deserialize_with = "lenient::opt_text")]
    pub activation_status: Option<String>,
    #[serde(default, deserialize_with = "lenient::opt_i64")]
    pub activation_status_id: Option<i64>,
    #[serde(default, deserialize_with = "lenient::opt_text")]
    pub lifetime_status: Option<String>,
    #[serde(default, deserialize_with = "lenient::opt_i64")]
    pub lifetime_status_id: Option<i64>,
    #[serde(default, deserialize_with = "lenient::opt_text")]
    pub audience_state: Option<String>,
    #[serde(default, deserialize_with = "lenient::opt_i64")]
    pub audience_state_id: Option<i64>,
    #[serde(default, rename = "type", deserialize_with = "lenient::opt_text")]
    pub audience_type: Option<String>,
    #[serde(default, deserialize_with = "lenient::opt_i64")]
    pub type_id: Option<i64>,
    #[serde(default, deserialize_with = "lenient::opt_i64")]
    pub source_audience_id: Option<i64>,
    #[serde(default, deserialize_with = "lenient::opt_i64")]
    pub source_audience_type_id: Option<i64>,
    #[serde(default, deserialize_with = "lenient::opt_bool")]
    pub can_create_lookalike: Option<bool>,
    #[serde(default, deserialize_with = "lenient::opt_bool")]
    pub has_segments: Option<bool>,
    /// Opaque: passed through as the vendor sent it.
    #[serde(default)]
    pub tag_collection: Option<Value>,
    pub crm_data: Option<C>,
}

impl<C: DeserializeOwned> Payload for AudienceDto<C> {}

/// `crmData` as read: its content, or why it could not be read. A `crmData` the gateway
/// cannot read never fails the audience itself; only insights and uploads need it.
#[derive(Debug, Clone)]
pub enum Crm {
    Read(CrmDataDto),
    Unreadable(String),
}

impl<'de> Deserialize<'de> for Crm {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        // Held as raw text so that a value inside it that cannot be read leaves the rest of
        // the audience readable.
        let raw = Box::<RawValue>::deserialize(d)?;
        Ok(match serde_json::from_str::<CrmDataDto>(raw.get()) {
            Ok(crm) => Crm::Read(crm),
            Err(e) => Crm::Unreadable(format!(
                "crmData.{}",
                unreadable_path::<CrmDataDto>(raw.get().as_bytes(), &e)
            )),
        })
    }
}

/// `crmData` of an audience.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CrmDataDto {
    #[serde(default, deserialize_with = "lenient::opt_text")]
    pub insights_state: Option<String>,
    #[serde(default, deserialize_with = "lenient::opt_count")]
    pub size: Option<u64>,
    #[serde(default, deserialize_with = "lenient::or_default")]
    pub history: CrmHistoryDto,
}

/// `crmData.history`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CrmHistoryDto {
    #[serde(default, deserialize_with = "lenient::opt_count")]
    pub total_events: Option<u64>,
    /// Upload events by their upload date (a date, or a timestamp with or without offset).
    #[serde(default, deserialize_with = "lenient::map")]
    pub history: BTreeMap<String, UploadEventDto>,
}

/// One upload event of `crmData.history.history`.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UploadEventDto {
    #[serde(default, deserialize_with = "lenient::opt_text")]
    pub mode: Option<String>,
    #[serde(default, deserialize_with = "lenient::count")]
    pub total_rows: u64,
    #[serde(default, deserialize_with = "lenient::opt_date")]
    pub created: Option<String>,
    #[serde(default, deserialize_with = "lenient::map")]
    pub data_set: BTreeMap<String, DataSetCountsDto>,
    #[serde(default, deserialize_with = "lenient::map")]
    pub match_rates: BTreeMap<String, Rate>,
}

/// A match rate, 0.0-1.0; `null` or absent when the vendor has none.
#[derive(Debug, Clone, Copy, Deserialize)]
pub struct Rate(#[serde(deserialize_with = "lenient::opt_f64")] pub Option<f64>);

/// Counts per identifier type; a `null` count is 0.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub struct DataSetCountsDto {
    #[serde(default, deserialize_with = "lenient::count")]
    pub total: u64,
    #[serde(default, deserialize_with = "lenient::count")]
    pub unique: u64,
    #[serde(default, rename = "MATCH", deserialize_with = "lenient::count")]
    pub matched: u64,
    #[serde(default, rename = "UMATCH", deserialize_with = "lenient::count")]
    pub usable_matched: u64,
    #[serde(default, rename = "NOMATCH", deserialize_with = "lenient::count")]
    pub unmatched: u64,
}

/// The vendor's campaign (assumed `{id, name, ...}`).
#[derive(Debug, Clone, Deserialize)]
pub struct CampaignDto {
    #[serde(deserialize_with = "lenient::i64_required")]
    pub id: i64,
    #[serde(default, deserialize_with = "lenient::opt_text")]
    pub name: Option<String>,
    #[serde(default, deserialize_with = "lenient::opt_date")]
    pub created: Option<String>,
}

impl Payload for CampaignDto {}

/// The answer to an update: the vendor's page shows none, so any `data` is accepted, and an
/// audience object in it is kept.
#[derive(Debug)]
pub struct UpdateAnswer(pub Option<AudienceDto<IgnoredAny>>);

impl<'de> Deserialize<'de> for UpdateAnswer {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = Value::deserialize(d)?;
        Ok(UpdateAnswer(
            v.is_object()
                .then(|| serde_json::from_value(v).ok())
                .flatten(),
        ))
    }
}

impl Payload for UpdateAnswer {
    fn absent() -> Option<Self> {
        Some(UpdateAnswer(None))
    }
}

/// The vendor's activation result: `flowId` and `segmentId` under `data`, or beside it.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ActivationDto {
    #[serde(default, deserialize_with = "lenient::opt_text")]
    pub flow_id: Option<String>,
    #[serde(default, deserialize_with = "lenient::opt_i64")]
    pub segment_id: Option<i64>,
}

impl Payload for ActivationDto {
    fn absent() -> Option<Self> {
        Some(ActivationDto::default())
    }

    fn complete(self, body: &[u8]) -> Result<Self, String> {
        if self.flow_id.is_some() && self.segment_id.is_some() {
            return Ok(self);
        }
        let top: ActivationDto =
            serde_json::from_slice(body).map_err(|e| unreadable_path::<ActivationDto>(body, &e))?;
        let done = ActivationDto {
            flow_id: self.flow_id.or(top.flow_id),
            segment_id: self.segment_id.or(top.segment_id),
        };
        match (&done.flow_id, done.segment_id) {
            (Some(_), Some(_)) => Ok(done),
            _ => Err("activation answer without `flowId` and `segmentId`".into()),
        }
    }
}

/// The vendor's platform account. `accessToken` is deliberately not a field: it is never
/// even read into memory, so it cannot be passed on.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PlatformAccountDto {
    #[serde(deserialize_with = "lenient::i64_required")]
    pub id: i64,
    #[serde(default, deserialize_with = "lenient::opt_text")]
    pub name: Option<String>,
    #[serde(default, deserialize_with = "lenient::opt_i64")]
    pub platform_id: Option<i64>,
    #[serde(default, deserialize_with = "lenient::opt_text")]
    pub platform_name: Option<String>,
    #[serde(default, deserialize_with = "lenient::opt_text")]
    pub platform_display_name: Option<String>,
    #[serde(default, deserialize_with = "lenient::opt_i64")]
    pub agency_id: Option<i64>,
    #[serde(default, deserialize_with = "lenient::opt_text")]
    pub agency_name: Option<String>,
    #[serde(default, deserialize_with = "lenient::opt_i64")]
    pub account_type_id: Option<i64>,
    #[serde(default, deserialize_with = "lenient::opt_text")]
    pub account_type_name: Option<String>,
    #[serde(default, deserialize_with = "lenient::opt_text")]
    pub advertiser_id: Option<String>,
    #[serde(default, deserialize_with = "lenient::opt_text")]
    pub client_id: Option<String>,
    #[serde(default, deserialize_with = "lenient::opt_i64")]
    pub default_segment_pricing_category_id: Option<i64>,
    #[serde(default, deserialize_with = "lenient::opt_date")]
    pub created: Option<String>,
    #[serde(default, deserialize_with = "lenient::opt_date")]
    pub updated: Option<String>,
}

/// The platform-account list; `null` is an empty list, `null` entries are left out.
#[derive(Debug, Clone, Default)]
pub struct PlatformAccounts(pub Vec<PlatformAccountDto>);

impl<'de> Deserialize<'de> for PlatformAccounts {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let items = Option::<Vec<Option<PlatformAccountDto>>>::deserialize(d)?;
        Ok(PlatformAccounts(
            items.into_iter().flatten().flatten().collect(),
        ))
    }
}

impl Payload for PlatformAccounts {
    fn absent() -> Option<Self> {
        Some(PlatformAccounts::default())
    }
}
