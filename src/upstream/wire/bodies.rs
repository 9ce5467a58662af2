//! The request bodies of the vendor's calls: exactly the fields below, no nulls (an absent
//! `description` is left out), ids as JSON integers (64-bit), dates as the caller's text.

use serde::Serialize;

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
