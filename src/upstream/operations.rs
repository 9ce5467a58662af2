//! The vendor's operations, typed: each sends its request body through the pipeline and
//! hands back the gateway's own types (never a vendor object), deciding what a success
//! without a payload means for it.

use serde::de::{DeserializeOwned, IgnoredAny};

use super::error::UpstreamError;
use super::pipeline::UpstreamClient;
use super::record::AudienceRecord;
use super::wire::{self, AudienceDto, Operation};
use crate::domain::{
    Activation, Audience, AudiencePatch, Campaign, NewActivation, NewAudience, PlatformAccount,
};
use crate::telemetry::CallContext;

/// A success without the payload the gateway needs from it. For a write, the write
/// happened, but its answer cannot be read (docs/UPSTREAM.md, "Writes that may have
/// happened").
fn without(what: &str) -> UpstreamError {
    UpstreamError::Unreadable(format!("a success without {what}"))
}

impl UpstreamClient {
    /// `GET` an audience with its insights and uploads. An answer without an audience
    /// (`data: null`, an empty 204) is "not found".
    pub async fn load_audience(
        &self,
        ctx: &CallContext,
        id: i64,
    ) -> Result<AudienceRecord, UpstreamError> {
        self.load::<wire::Crm>(ctx, id)
            .await
            .map(AudienceDto::into_record)
    }

    /// `GET` an audience without its upload history (skipped while decoding).
    pub async fn load_audience_only(
        &self,
        ctx: &CallContext,
        id: i64,
    ) -> Result<Audience, UpstreamError> {
        self.load::<IgnoredAny>(ctx, id)
            .await
            .map(AudienceDto::into_audience)
    }

    async fn load<C: DeserializeOwned>(
        &self,
        ctx: &CallContext,
        id: i64,
    ) -> Result<AudienceDto<C>, UpstreamError> {
        self.call(ctx, Operation::LoadAudience, Some(id), None::<&()>)
            .await
            .and_then(|dto| dto.ok_or_else(|| UpstreamError::NotFound(String::new())))
            .map_err(|e| e.not_found_as(format!("audience {id}")))
    }

    /// Creates a CRM audience.
    pub async fn create_audience(
        &self,
        ctx: &CallContext,
        a: &NewAudience,
    ) -> Result<Audience, UpstreamError> {
        let body = wire::CreateAudienceBody {
            name: &a.name,
            description: a.description.as_deref(),
            campaign_id: a.campaign_id,
        };
        self.call::<AudienceDto<IgnoredAny>, _>(ctx, Operation::CreateAudience, None, Some(&body))
            .await
            .and_then(|dto| dto.ok_or_else(|| without("the created audience")))
            .map(AudienceDto::into_audience)
            .map_err(UpstreamError::refused_if_not_found)
    }

    /// Updates name and description; `name` must be the full new name. Returns the
    /// audience when the vendor's answer carried one (its page shows no update answer; a
    /// 204 or an empty body is a success without one).
    pub async fn update_audience(
        &self,
        ctx: &CallContext,
        id: i64,
        name: &str,
        patch: &AudiencePatch,
    ) -> Result<Option<Audience>, UpstreamError> {
        let body = wire::UpdateAudienceBody {
            id,
            name,
            description: patch.description.as_deref(),
        };
        self.call::<wire::UpdateAnswer, _>(ctx, Operation::UpdateAudience, None, Some(&body))
            .await
            .map(|answer| answer.and_then(|a| a.0).map(AudienceDto::into_audience))
            .map_err(|e| e.not_found_as(format!("audience {id}")))
    }

    /// Deletes an audience. Success is the envelope's and the HTTP status's (a 204 with no
    /// body included); `data` is not read.
    pub async fn delete_audience(&self, ctx: &CallContext, id: i64) -> Result<(), UpstreamError> {
        self.call::<IgnoredAny, _>(
            ctx,
            Operation::DeleteAudience,
            None,
            Some(&wire::DeleteAudienceBody { id }),
        )
        .await
        .map(drop)
        .map_err(|e| e.not_found_as(format!("audience {id}")))
    }

    /// Activates an audience on a platform account.
    pub async fn activate(
        &self,
        ctx: &CallContext,
        id: i64,
        a: &NewActivation,
    ) -> Result<Activation, UpstreamError> {
        let body = wire::ActivateBody {
            audience_id: id,
            account_id: a.account_id,
            name: &a.name,
            description: &a.description,
            start_date: &a.start_date,
            end_date: &a.end_date,
        };
        self.call::<wire::ActivationDto, _>(ctx, Operation::ActivateAudience, None, Some(&body))
            .await
            .and_then(|d| d.ok_or_else(|| without("`flowId` and `segmentId`")))
            .map(|d| d.into_activation(id, a.account_id))
            .map_err(|e| e.not_found_as(format!("audience {id}")))
    }

    /// Creates a campaign.
    pub async fn create_campaign(
        &self,
        ctx: &CallContext,
        name: &str,
    ) -> Result<Campaign, UpstreamError> {
        self.call::<wire::CampaignDto, _>(
            ctx,
            Operation::CreateCampaign,
            None,
            Some(&wire::CreateCampaignBody { name }),
        )
        .await
        .and_then(|d| d.ok_or_else(|| without("the created campaign")))
        .map(Into::into)
        .map_err(UpstreamError::refused_if_not_found)
    }

    /// Lists platform accounts, without their access tokens; a success without a list is
    /// an empty one.
    pub async fn platform_accounts(
        &self,
        ctx: &CallContext,
    ) -> Result<Vec<PlatformAccount>, UpstreamError> {
        self.call::<wire::PlatformAccounts, _>(
            ctx,
            Operation::LoadPlatformAccounts,
            None,
            None::<&()>,
        )
        .await
        .map(|list| {
            list.unwrap_or_default()
                .0
                .into_iter()
                .map(Into::into)
                .collect()
        })
    }
}

/// A load answer's body read as [`UpstreamClient::load_audience`] reads it, without the
/// call: what the benchmarks measure.
pub fn read_audience(body: &[u8]) -> Result<AudienceRecord, UpstreamError> {
    read_load::<wire::Crm>(body).map(AudienceDto::into_record)
}

/// A load answer's body read as [`UpstreamClient::load_audience_only`] reads it.
pub fn read_audience_only(body: &[u8]) -> Result<Audience, UpstreamError> {
    read_load::<IgnoredAny>(body).map(AudienceDto::into_audience)
}

fn read_load<C: DeserializeOwned>(body: &[u8]) -> Result<AudienceDto<C>, UpstreamError> {
    let headers = reqwest::header::HeaderMap::new();
    let answer = wire::read(
        Operation::LoadAudience,
        reqwest::StatusCode::OK,
        &headers,
        body,
    );
    super::pipeline::settle(answer)?.ok_or_else(|| UpstreamError::NotFound(String::new()))
}
