//! The simulator's vendor-side data: campaigns, audiences and platform accounts, seeded
//! deterministically, and the business rules of each call.

use std::collections::BTreeMap;

use chrono::{DateTime, Duration, SecondsFormat, TimeZone, Utc};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::{Serialize, Serializer};
use serde_json::{json, Map, Value};

/// Fixed seed, so every simulator starts with byte-identical data.
const SEED: u64 = 0x5eed_0da0_2025;
/// The first seeded audience id; later audiences get the next free ids.
pub(crate) const FIRST_AUDIENCE_ID: i64 = 1001;
/// The user that owns every audience (the sandbox has one vendor user).
const SANDBOX_USER_ID: i64 = 4217;
const FIRST_SEGMENT_ID: i64 = 7001;
const MAX_NAME_CHARS: usize = 255;
const IDENTIFIER_KINDS: [&str; 5] = ["EMAIL", "PHONE", "POSTALADDRESS", "SECURITYNUMBER", "AAID"];
const SEED_AUDIENCE_NAMES: [&str; 6] = [
    "Newsletter subscribers",
    "Lapsed customers",
    "Loyalty gold members",
    "Webshop buyers",
    "App users EU",
    "Event attendees",
];

/// A call the vendor refused: answered as an envelope with `success: false`, or as a
/// ProblemDetails body in the `problem-details` style.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Rejection {
    /// The referenced audience does not exist (`statusCode` 404).
    NotFound(String),
    /// The request failed validation (`statusCode` 400). `field` is the request field at
    /// fault in ASP.NET's PascalCase (the key of a ProblemDetails `errors` map), `$` for the
    /// body as a whole.
    Invalid {
        field: &'static str,
        message: String,
    },
    /// The login's user name or password is wrong (`statusCode` 401).
    BadCredentials,
}

impl Rejection {
    /// A validation failure of `field` (PascalCase, `$` for the whole body).
    pub(crate) fn invalid(field: &'static str, message: String) -> Self {
        Rejection::Invalid { field, message }
    }

    /// The envelope's `status.statusCode` for this rejection.
    pub(crate) fn status_code(&self) -> i32 {
        match self {
            Rejection::NotFound(_) => 404,
            Rejection::Invalid { .. } => 400,
            Rejection::BadCredentials => 401,
        }
    }

    /// The envelope's `status.message` for this rejection.
    pub(crate) fn message(&self) -> &str {
        match self {
            Rejection::NotFound(message) | Rejection::Invalid { message, .. } => message,
            Rejection::BadCredentials => "Invalid user name or password",
        }
    }
}

/// The vendor's audience object, fields in the order of the reference's example response.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Audience {
    user_id: i64,
    description: Option<String>,
    campaign_id: i64,
    campaign_name: String,
    #[serde(serialize_with = "opt_timestamp")]
    data_updated: Option<DateTime<Utc>>,
    #[serde(serialize_with = "opt_date")]
    start_date: Option<DateTime<Utc>>,
    #[serde(serialize_with = "opt_date")]
    end_date: Option<DateTime<Utc>>,
    activation_status: &'static str,
    activation_status_id: i32,
    lifetime_status: Option<&'static str>,
    lifetime_status_id: Option<i32>,
    tag_collection: Option<Value>,
    crm_data: Option<Value>,
    audience_state: &'static str,
    audience_state_id: i32,
    #[serde(rename = "type")]
    audience_type: &'static str,
    type_id: i32,
    source_audience_id: Option<i64>,
    source_audience_type_id: Option<i32>,
    can_create_lookalike: bool,
    has_segments: bool,
    id: i64,
    name: String,
    #[serde(serialize_with = "timestamp")]
    created: DateTime<Utc>,
    #[serde(serialize_with = "timestamp")]
    updated: DateTime<Utc>,
}

/// A campaign as `createcampaign` returns it.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Campaign {
    id: i64,
    name: String,
    #[serde(serialize_with = "timestamp")]
    created: DateTime<Utc>,
}

/// An ad-platform account, including the `accessToken` the gateway must strip.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct PlatformAccount {
    id: i64,
    name: &'static str,
    platform_id: i64,
    platform_name: &'static str,
    platform_display_name: &'static str,
    agency_id: i64,
    agency_name: &'static str,
    account_type_id: i64,
    account_type_name: &'static str,
    advertiser_id: Option<&'static str>,
    client_id: &'static str,
    access_token: Option<String>,
    default_segment_pricing_category_id: Option<i64>,
    #[serde(serialize_with = "timestamp")]
    created: DateTime<Utc>,
    #[serde(serialize_with = "timestamp")]
    updated: DateTime<Utc>,
}

/// What `activate` answers.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Activation {
    flow_id: String,
    segment_id: i64,
}

/// An activation request after its dates were parsed.
pub(crate) struct ActivationOrder<'a> {
    pub(crate) audience_id: i64,
    pub(crate) account_id: i64,
    pub(crate) name: &'a str,
    pub(crate) start: DateTime<Utc>,
    pub(crate) end: DateTime<Utc>,
}

/// All vendor-side data of one simulator.
#[derive(Debug)]
pub(crate) struct Store {
    campaigns: BTreeMap<i64, Campaign>,
    audiences: BTreeMap<i64, Audience>,
    accounts: Vec<PlatformAccount>,
    next_audience_id: i64,
    next_campaign_id: i64,
    next_segment_id: i64,
}

impl Store {
    /// The seeded store: campaigns 1-3, platform accounts 501-503 and `audiences`
    /// audiences from id 1001 (1002 is the one without CRM data).
    pub(crate) fn seeded(audiences: usize) -> Self {
        let mut rng = StdRng::seed_from_u64(SEED);
        let epoch = Utc
            .with_ymd_and_hms(2025, 3, 3, 8, 0, 0)
            .single()
            .unwrap_or_default();
        let mut store = Store {
            campaigns: BTreeMap::new(),
            audiences: BTreeMap::new(),
            accounts: seed_accounts(&mut rng, epoch),
            next_audience_id: FIRST_AUDIENCE_ID,
            next_campaign_id: 1,
            next_segment_id: FIRST_SEGMENT_ID,
        };
        for name in ["Sandbox campaign", "Spring sale", "Loyalty programme"] {
            let created = jitter(&mut rng, epoch, 0..=2);
            store.insert_campaign(name.to_owned(), created);
        }
        for index in 0..audiences {
            store.seed_audience(&mut rng, epoch, index);
        }
        store
    }

    fn insert_campaign(&mut self, name: String, created: DateTime<Utc>) -> Campaign {
        let campaign = Campaign {
            id: self.next_campaign_id,
            name,
            created,
        };
        self.next_campaign_id += 1;
        self.campaigns.insert(campaign.id, campaign.clone());
        campaign
    }

    fn seed_audience(&mut self, rng: &mut StdRng, epoch: DateTime<Utc>, index: usize) {
        let id = self.next_audience_id;
        let campaign_id = (index % 3) as i64 + 1;
        let base_name = SEED_AUDIENCE_NAMES[index % SEED_AUDIENCE_NAMES.len()];
        let name = match index / SEED_AUDIENCE_NAMES.len() {
            0 => base_name.to_owned(),
            round => format!("{base_name} {}", round + 1),
        };
        let created = jitter(rng, epoch, 3..=60);
        let mut audience = self.new_audience(id, name, None, campaign_id, created);
        audience.description =
            (index.is_multiple_of(2)).then(|| format!("Seeded CRM audience #{}", index + 1));
        audience.lifetime_status = Some("Active");
        audience.lifetime_status_id = Some(1);
        // 1002 stays as a freshly created audience: no upload yet.
        if index != 1 {
            let ready = index.is_multiple_of(2);
            let (crm_data, last_upload, size) = seed_crm_data(rng, id, created, ready);
            audience.crm_data = Some(crm_data);
            audience.data_updated = Some(last_upload);
            audience.updated = last_upload;
            (audience.audience_state, audience.audience_state_id) = if ready {
                ("READY", 1)
            } else {
                ("PROCESSING", 3)
            };
            audience.can_create_lookalike = ready && size >= 1_000;
        }
        if index == 2 {
            let start = audience.updated + Duration::days(1);
            audience.activation_status = "Active";
            audience.activation_status_id = 1;
            audience.has_segments = true;
            audience.start_date = Some(start);
            audience.end_date = Some(start + Duration::days(90));
        }
        self.audiences.insert(id, audience);
        self.next_audience_id += 1;
    }

    fn new_audience(
        &self,
        id: i64,
        name: String,
        description: Option<String>,
        campaign_id: i64,
        now: DateTime<Utc>,
    ) -> Audience {
        Audience {
            user_id: SANDBOX_USER_ID,
            description,
            campaign_id,
            campaign_name: self
                .campaigns
                .get(&campaign_id)
                .map(|c| c.name.clone())
                .unwrap_or_default(),
            data_updated: None,
            start_date: None,
            end_date: None,
            activation_status: "New",
            activation_status_id: 0,
            lifetime_status: None,
            lifetime_status_id: None,
            tag_collection: None,
            crm_data: None,
            audience_state: "NODATA",
            audience_state_id: 5,
            audience_type: "ONBOARDING",
            type_id: 0,
            source_audience_id: None,
            source_audience_type_id: None,
            can_create_lookalike: false,
            has_segments: false,
            id,
            name,
            created: now,
            updated: now,
        }
    }

    /// `createcrmaudience`: a new ONBOARDING audience in an existing campaign, with the next
    /// id, and at least `first_id`.
    pub(crate) fn create_audience(
        &mut self,
        name: &str,
        description: Option<String>,
        campaign_id: i64,
        first_id: i64,
        now: DateTime<Utc>,
    ) -> Result<Audience, Rejection> {
        let name = valid_name(name)?;
        if !self.campaigns.contains_key(&campaign_id) {
            return Err(Rejection::invalid(
                "CampaignId",
                format!("Campaign {campaign_id} not found"),
            ));
        }
        let id = self.next_audience_id.max(first_id);
        let audience = self.new_audience(id, name, description, campaign_id, now);
        self.next_audience_id = id + 1;
        self.audiences.insert(id, audience.clone());
        Ok(audience)
    }

    /// `update`: replaces name and description (an absent description clears it).
    pub(crate) fn update_audience(
        &mut self,
        id: i64,
        name: &str,
        description: Option<String>,
        now: DateTime<Utc>,
    ) -> Result<Audience, Rejection> {
        let name = valid_name(name)?;
        let audience = self
            .audiences
            .get_mut(&id)
            .ok_or_else(|| audience_not_found(id))?;
        audience.name = name;
        audience.description = description;
        audience.updated = later_than(audience.updated, now);
        Ok(audience.clone())
    }

    /// `activate`: a new segment on a platform account; the audience becomes Active.
    pub(crate) fn activate(
        &mut self,
        order: ActivationOrder<'_>,
        now: DateTime<Utc>,
    ) -> Result<Activation, Rejection> {
        valid_name(order.name)?;
        if order.end <= order.start {
            return Err(Rejection::invalid(
                "EndDate",
                "endDate must be after startDate".to_owned(),
            ));
        }
        if !self.audiences.contains_key(&order.audience_id) {
            return Err(audience_not_found(order.audience_id));
        }
        if !self
            .accounts
            .iter()
            .any(|account| account.id == order.account_id)
        {
            return Err(Rejection::invalid(
                "AccountId",
                format!("Platform account {} not found", order.account_id),
            ));
        }
        let audience = self
            .audiences
            .get_mut(&order.audience_id)
            .ok_or_else(|| audience_not_found(order.audience_id))?;
        audience.activation_status = "Active";
        audience.activation_status_id = 1;
        audience.has_segments = true;
        audience.start_date = Some(order.start);
        audience.end_date = Some(order.end);
        audience.updated = later_than(audience.updated, now);
        let segment_id = self.next_segment_id;
        self.next_segment_id += 1;
        Ok(Activation {
            flow_id: uuid::Uuid::new_v4().to_string(),
            segment_id,
        })
    }

    /// `loadAudienceById`: the audience with its `crmData`.
    pub(crate) fn load_audience(&self, id: i64) -> Result<Audience, Rejection> {
        self.audiences
            .get(&id)
            .cloned()
            .ok_or_else(|| audience_not_found(id))
    }

    /// `delete`: removes the audience and all connected data.
    pub(crate) fn delete_audience(&mut self, id: i64) -> Result<(), Rejection> {
        self.audiences
            .remove(&id)
            .map(drop)
            .ok_or_else(|| audience_not_found(id))
    }

    /// `createcampaign`: a new campaign.
    pub(crate) fn create_campaign(
        &mut self,
        name: &str,
        now: DateTime<Utc>,
    ) -> Result<Campaign, Rejection> {
        let name = valid_name(name)?;
        Ok(self.insert_campaign(name, now))
    }

    /// `loadplatformaccounts`: every platform account of the organisation.
    pub(crate) fn platform_accounts(&self) -> &[PlatformAccount] {
        &self.accounts
    }
}

fn audience_not_found(id: i64) -> Rejection {
    Rejection::NotFound(format!("Audience {id} not found"))
}

fn valid_name(name: &str) -> Result<String, Rejection> {
    let name = name.trim();
    if name.is_empty() {
        return Err(Rejection::invalid(
            "Name",
            "The Name field is required.".to_owned(),
        ));
    }
    if name.chars().count() > MAX_NAME_CHARS {
        return Err(Rejection::invalid(
            "Name",
            format!("The field Name must be a string with a maximum length of {MAX_NAME_CHARS}."),
        ));
    }
    Ok(name.to_owned())
}

/// `now`, or one microsecond after `previous` if the clock has not moved on: an update
/// must always show a newer `updated` than the one before it.
fn later_than(previous: DateTime<Utc>, now: DateTime<Utc>) -> DateTime<Utc> {
    now.max(previous + Duration::microseconds(1))
}

/// A time `days` after `from`, at a random second and microsecond.
fn jitter(
    rng: &mut StdRng,
    from: DateTime<Utc>,
    days: std::ops::RangeInclusive<i64>,
) -> DateTime<Utc> {
    from + Duration::days(rng.random_range(days))
        + Duration::seconds(rng.random_range(0..86_400))
        + Duration::microseconds(rng.random_range(0..1_000_000))
}

/// `crmData` with 1-4 upload events whose counts are consistent, the last upload's time and
/// the total size.
fn seed_crm_data(
    rng: &mut StdRng,
    audience_id: i64,
    created: DateTime<Utc>,
    ready: bool,
) -> (Value, DateTime<Utc>, u64) {
    let events = rng.random_range(1..=4_u64);
    let mut uploaded = jitter(rng, created, 0..=1);
    let mut history = Map::new();
    let mut size = 0;
    for event in 0..events {
        if event > 0 {
            uploaded = jitter(rng, uploaded, 1..=20);
        }
        let total_rows = rng.random_range(2_000..=250_000_u64);
        let mut data_set = Map::new();
        let mut match_rates = Map::new();
        for kind in IDENTIFIER_KINDS {
            if kind != "EMAIL" && !rng.random_bool(0.5) {
                continue;
            }
            let total = if kind == "EMAIL" {
                total_rows
            } else {
                total_rows * rng.random_range(40..=100) / 100
            };
            let unique = (total * rng.random_range(85..=100) / 100).max(1);
            let matched = unique * rng.random_range(35..=80) / 100;
            let usable = matched * rng.random_range(80..=100) / 100;
            data_set.insert(
                kind.to_owned(),
                json!({"TOTAL": total, "UNIQUE": unique, "MATCH": matched, "UMATCH": usable, "NOMATCH": unique - matched}),
            );
            match_rates.insert(kind.to_owned(), json!(matched as f64 / unique as f64));
        }
        history.insert(
            format_timestamp(uploaded),
            json!({
                "audienceId": audience_id,
                "mode": "opt-in",
                "totalRows": total_rows,
                "created": format_timestamp(uploaded),
                "dataSet": data_set,
                "matchRates": match_rates,
            }),
        );
        size += total_rows;
    }
    let (insights_state, insights_state_id) = if ready { ("READY", 2) } else { ("PENDING", 1) };
    let crm_data = json!({
        "insightsState": insights_state,
        "insightsStateId": insights_state_id,
        "size": size,
        "history": {"totalEvents": events, "history": history},
    });
    (crm_data, uploaded, size)
}

fn seed_accounts(rng: &mut StdRng, epoch: DateTime<Utc>) -> Vec<PlatformAccount> {
    let created = jitter(rng, epoch, 0..=1);
    let updated = jitter(rng, created, 30..=90);
    vec![
        PlatformAccount {
            id: 501,
            name: "Sandbox Meta Ads",
            platform_id: 1,
            platform_name: "FACEBOOK",
            platform_display_name: "Meta",
            agency_id: 42,
            agency_name: "Sandbox Agency",
            account_type_id: 1,
            account_type_name: "Ad account",
            advertiser_id: Some("act_1048576000123"),
            client_id: "1048576000123",
            access_token: Some(format!("EAAB{}", random_token(rng, 180))),
            default_segment_pricing_category_id: Some(3),
            created,
            updated,
        },
        PlatformAccount {
            id: 502,
            name: "Sandbox Google Ads",
            platform_id: 2,
            platform_name: "GOOGLE_ADS",
            platform_display_name: "Google Ads",
            agency_id: 42,
            agency_name: "Sandbox Agency",
            account_type_id: 1,
            account_type_name: "Ad account",
            advertiser_id: None,
            client_id: "123-456-7890",
            access_token: Some(format!("ya29.a0{}", random_token(rng, 150))),
            default_segment_pricing_category_id: None,
            created,
            updated,
        },
        PlatformAccount {
            id: 503,
            name: "Sandbox The Trade Desk",
            platform_id: 7,
            platform_name: "THE_TRADE_DESK",
            platform_display_name: "The Trade Desk",
            agency_id: 42,
            agency_name: "Sandbox Agency",
            account_type_id: 2,
            account_type_name: "Seat",
            advertiser_id: Some("sbx4k2p"),
            client_id: "sandbox-ttd",
            access_token: None,
            default_segment_pricing_category_id: Some(1),
            created,
            updated: created,
        },
    ]
}

fn random_token(rng: &mut StdRng, len: usize) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    (0..len)
        .map(|_| char::from(ALPHABET[rng.random_range(0..ALPHABET.len())]))
        .collect()
}

/// The vendor's timestamp shape: RFC 3339, UTC, microseconds, `Z`.
pub(crate) fn format_timestamp(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Micros, true)
}

fn timestamp<S: Serializer>(at: &DateTime<Utc>, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(&format_timestamp(*at))
}

fn opt_timestamp<S: Serializer>(
    at: &Option<DateTime<Utc>>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    match at {
        Some(at) => timestamp(at, serializer),
        None => serializer.serialize_none(),
    }
}

/// Activation dates echo what the caller sent: fractional seconds only when there are any.
fn opt_date<S: Serializer>(at: &Option<DateTime<Utc>>, serializer: S) -> Result<S::Ok, S::Error> {
    match at {
        Some(at) => serializer.serialize_str(&at.to_rfc3339_opts(SecondsFormat::AutoSi, true)),
        None => serializer.serialize_none(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn crm(store: &Store, id: i64) -> Value {
        serde_json::to_value(store.load_audience(id).expect("seeded")).expect("serialises")
            ["crmData"]
            .clone()
    }

    #[test]
    fn seed_is_deterministic() {
        let (a, b) = (Store::seeded(5), Store::seeded(5));
        for id in 1001..=1005 {
            assert_eq!(
                serde_json::to_string(&a.load_audience(id).expect("a")).expect("json"),
                serde_json::to_string(&b.load_audience(id).expect("b")).expect("json"),
            );
        }
        assert!(a.load_audience(1006).is_err());
    }

    #[test]
    fn seeded_crm_numbers_are_consistent() {
        let store = Store::seeded(8);
        assert_eq!(crm(&store, 1002), Value::Null);
        for id in (1001..=1008).filter(|id| *id != 1002) {
            let crm = crm(&store, id);
            let events = crm["history"]["history"].as_object().expect("history map");
            assert_eq!(
                crm["history"]["totalEvents"].as_u64(),
                Some(events.len() as u64)
            );
            assert!((1..=4).contains(&events.len()));
            let rows: u64 = events
                .values()
                .map(|e| e["totalRows"].as_u64().expect("rows"))
                .sum();
            assert_eq!(crm["size"].as_u64(), Some(rows));
            for event in events.values() {
                assert_eq!(event["audienceId"].as_i64(), Some(id));
                let data_set = event["dataSet"].as_object().expect("dataSet");
                assert!(data_set.contains_key("EMAIL"));
                for (kind, counts) in data_set {
                    let n = |k: &str| counts[k].as_u64().expect("count");
                    assert!(
                        n("UNIQUE") <= n("TOTAL")
                            && n("MATCH") <= n("UNIQUE")
                            && n("UMATCH") <= n("MATCH")
                    );
                    assert_eq!(n("NOMATCH"), n("UNIQUE") - n("MATCH"));
                    let rate = event["matchRates"][kind].as_f64().expect("rate");
                    assert!((rate - n("MATCH") as f64 / n("UNIQUE") as f64).abs() < 1e-12);
                }
            }
        }
    }

    #[test]
    fn updated_always_moves_forward() {
        let mut store = Store::seeded(1);
        let created = store.load_audience(1001).expect("seeded").updated;
        let updated = store
            .update_audience(1001, "Renamed", None, created)
            .expect("updates");
        assert!(updated.updated > created);
    }
}
