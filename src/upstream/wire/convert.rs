//! From the vendor's objects to the gateway's own types: the audience, its insights and
//! uploads (derived from `crmData`), campaigns, activations and platform accounts.

use super::dto::{
    ActivationDto, AudienceDto, CampaignDto, Crm, CrmDataDto, PlatformAccountDto, UploadEventDto,
};
use crate::domain::{
    Activation, Audience, Campaign, IdentifierStats, Insights, PlatformAccount, UploadEvent,
    Uploads,
};
use crate::upstream::record::{AudienceRecord, Unreadable};

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
            advertiser_id: d.advertiser_id,
            client_id: d.client_id,
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
    /// The public activation result; `complete` guaranteed both ids.
    pub fn into_activation(self, audience_id: i64, account_id: i64) -> Activation {
        Activation {
            audience_id,
            account_id,
            flow_id: self.flow_id.unwrap_or_default(),
            segment_id: self.segment_id.unwrap_or_default(),
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
            match_rate: event.match_rates.get(kind).and_then(|r| r.0),
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
            type_id: self.type_id,
            activation_status: self.activation_status,
            activation_status_id: self.activation_status_id,
            lifetime_status: self.lifetime_status,
            lifetime_status_id: self.lifetime_status_id,
            audience_state: self.audience_state,
            audience_state_id: self.audience_state_id,
            can_create_lookalike: self.can_create_lookalike.unwrap_or(false),
            has_segments: self.has_segments.unwrap_or(false),
            source_audience_id: self.source_audience_id,
            source_audience_type_id: self.source_audience_type_id,
            tag_collection: self.tag_collection,
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
    /// The audience with its insights and uploads, each derived once.
    pub fn into_record(self) -> AudienceRecord {
        AudienceRecord {
            insights: self.to_insights(),
            uploads: self.to_uploads(),
            audience: self.into_audience(),
        }
    }

    /// `crmData`: `None` without CRM data, an error when it could not be read.
    fn crm(&self) -> Result<Option<&CrmDataDto>, Unreadable> {
        match &self.crm_data {
            None => Ok(None),
            Some(Crm::Read(c)) => Ok(Some(c)),
            Some(Crm::Unreadable(why)) => Err(Unreadable(why.clone())),
        }
    }

    /// Upload events, newest first (by their upload date key).
    fn events_newest_first(crm: Option<&CrmDataDto>) -> Vec<(&String, &UploadEventDto)> {
        let mut events: Vec<_> = crm.iter().flat_map(|c| c.history.history.iter()).collect();
        events.sort_by(|a, b| sort_key(b.0).cmp(&sort_key(a.0)));
        events
    }

    /// Insights derived from `crmData` (the newest upload gives the per-identifier counts).
    pub(super) fn to_insights(&self) -> Result<Insights, Unreadable> {
        let crm = self.crm()?;
        let events = Self::events_newest_first(crm);
        Ok(Insights {
            audience_id: self.id,
            state: match crm {
                None => "NO_DATA".into(),
                Some(c) => c.insights_state.clone().unwrap_or_else(|| "UNKNOWN".into()),
            },
            size: crm.and_then(|c| c.size).unwrap_or(0),
            uploads: crm
                .and_then(|c| c.history.total_events)
                .unwrap_or(events.len() as u64),
            last_upload: events.first().map(|(d, _)| (*d).clone()),
            identifiers: events
                .first()
                .map(|(_, e)| identifiers(e))
                .unwrap_or_default(),
        })
    }

    /// Upload events derived from `crmData.history`, newest first.
    pub(super) fn to_uploads(&self) -> Result<Uploads, Unreadable> {
        let crm = self.crm()?;
        let events = Self::events_newest_first(crm);
        Ok(Uploads {
            audience_id: self.id,
            total_events: crm
                .and_then(|c| c.history.total_events)
                .unwrap_or(events.len() as u64),
            uploads: events
                .into_iter()
                .map(|(date, e)| UploadEvent {
                    uploaded_at: date.clone(),
                    created: e.created.clone(),
                    mode: e.mode.clone(),
                    total_rows: e.total_rows,
                    identifiers: identifiers(e),
                })
                .collect(),
        })
    }
}

/// Orders upload date keys by time when they parse (RFC 3339, a timestamp without offset
/// taken as UTC, or a date), else as text.
fn sort_key(date: &str) -> (i64, &str) {
    let ts = chrono::DateTime::parse_from_rfc3339(date)
        .map(|d| d.timestamp_micros())
        .or_else(|_| {
            chrono::NaiveDateTime::parse_from_str(date, "%Y-%m-%dT%H:%M:%S%.f")
                .map(|d| d.and_utc().timestamp_micros())
        })
        .or_else(|_| {
            chrono::NaiveDate::parse_from_str(date, "%Y-%m-%d").map(|d| {
                d.and_time(chrono::NaiveTime::MIN)
                    .and_utc()
                    .timestamp_micros()
            })
        })
        .unwrap_or(i64::MIN);
    (ts, date)
}
