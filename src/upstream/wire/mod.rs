//! Everything the gateway knows about the vendor's wire format, and the one place that says
//! what a vendor answer means ([`read`], the answer table). The contract, and every
//! assumption made where the vendor's page is silent, is written down in docs/UPSTREAM.md; a
//! correction to it is a change in this module only.
//!
//! - this file: the operations (method, path, whether repeating one is harmless);
//! - [`bodies`]: the request bodies;
//! - [`envelope`]: the envelope and what a body says once decoded;
//! - [`dto`]: the vendor's objects, read tolerantly ([`lenient`]: unknown fields ignored,
//!   `null` for "absent" wherever a value is optional, quoted numbers, .NET's "no date");
//! - [`convert`]: from those objects to the gateway's own types;
//! - [`refusal`]: what a refusal body says, sanitised for the caller;
//! - [`answer`]: status, headers and body to one [`Answer`].

mod answer;
mod bodies;
mod convert;
mod dto;
mod envelope;
mod lenient;
mod refusal;
#[cfg(test)]
mod tests;

pub use answer::{read, Answer};
pub use bodies::{
    ActivateBody, CreateAudienceBody, CreateCampaignBody, DeleteAudienceBody, LoginBody,
    UpdateAudienceBody,
};
pub use dto::{ActivationDto, AudienceDto, CampaignDto, Crm, PlatformAccounts, UpdateAnswer};
pub use envelope::Payload;
pub use refusal::Refusal;

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
