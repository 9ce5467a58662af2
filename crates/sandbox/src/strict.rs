//! Model binding as an ASP.NET `[ApiController]` does it before the vendor's code runs:
//! the request body is checked against each call's request type, and a body that does not
//! bind is refused with HTTP 400 ProblemDetails naming the fields. Used by the `strict`
//! style (every check) and the `problem-details` style (only what the contract style also
//! refuses: malformed JSON, a wrong type, a missing field), so both name the field at fault.

use serde_json::Value;

use crate::handlers::Call;
use crate::problem::Errors;

#[derive(Clone, Copy)]
enum Kind {
    /// An integer, also as a numeric string (ASP.NET's web JSON defaults read both).
    Id,
    Text,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Need {
    Required,
    /// Required by the vendor's page but not by the contract style: activation `description`.
    RequiredWhenStrict,
    Optional,
}

struct Field {
    name: &'static str,
    kind: Kind,
    need: Need,
}

const fn field(name: &'static str, kind: Kind, need: Need) -> Field {
    Field { name, kind, need }
}

/// A request type: its .NET name (ASP.NET quotes it in messages) and fields.
struct Schema {
    type_name: &'static str,
    fields: &'static [Field],
}

const LOGIN: Schema = Schema {
    type_name: "LoginRequest",
    fields: &[
        field("userName", Kind::Text, Need::Required),
        field("password", Kind::Text, Need::Required),
    ],
};
const CREATE_AUDIENCE: Schema = Schema {
    type_name: "CreateCrmAudienceRequest",
    fields: &[
        field("name", Kind::Text, Need::Required),
        field("description", Kind::Text, Need::Optional),
        field("campaignId", Kind::Id, Need::Required),
    ],
};
const UPDATE_AUDIENCE: Schema = Schema {
    type_name: "UpdateAudienceRequest",
    fields: &[
        field("id", Kind::Id, Need::Required),
        field("name", Kind::Text, Need::Required),
        field("description", Kind::Text, Need::Optional),
    ],
};
const ACTIVATE_AUDIENCE: Schema = Schema {
    type_name: "ActivateAudienceRequest",
    fields: &[
        field("audienceId", Kind::Id, Need::Required),
        field("accountId", Kind::Id, Need::Required),
        field("name", Kind::Text, Need::Required),
        field("description", Kind::Text, Need::RequiredWhenStrict),
        field("startDate", Kind::Text, Need::Required),
        field("endDate", Kind::Text, Need::Required),
    ],
};
const DELETE_AUDIENCE: Schema = Schema {
    type_name: "DeleteAudienceRequest",
    fields: &[field("id", Kind::Id, Need::Required)],
};
const CREATE_CAMPAIGN: Schema = Schema {
    type_name: "CreateCampaignRequest",
    fields: &[field("name", Kind::Text, Need::Required)],
};

/// The request type of a call with a body; `None` for the GET calls.
fn schema(call: Call) -> Option<&'static Schema> {
    match call {
        Call::Login => Some(&LOGIN),
        Call::CreateAudience => Some(&CREATE_AUDIENCE),
        Call::UpdateAudience => Some(&UPDATE_AUDIENCE),
        Call::ActivateAudience => Some(&ACTIVATE_AUDIENCE),
        Call::DeleteAudience => Some(&DELETE_AUDIENCE),
        Call::CreateCampaign => Some(&CREATE_CAMPAIGN),
        Call::LoadAudience(_) | Call::LoadPlatformAccounts => None,
    }
}

/// Binds the request of `call`. With `strict`, also refuses a body sent without a JSON
/// `Content-Type`, unknown fields, a missing activation `description` and ids that are not
/// 64-bit integers (the vendor's `long`).
pub(crate) fn bind(
    call: Call,
    content_type: Option<&str>,
    body: &[u8],
    strict: bool,
) -> Result<(), Errors> {
    let Some(schema) = schema(call) else {
        return Ok(());
    };
    if strict && !content_type.is_some_and(is_json) {
        return Err(one(
            "$",
            "The request body must be sent with Content-Type: application/json.".to_owned(),
        ));
    }
    let object = match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(object)) => object,
        Ok(_) => {
            return Err(one(
                "$",
                format!(
                    "The JSON value could not be converted to {}.",
                    schema.type_name
                ),
            ))
        }
        Err(error) => {
            return Err(one(
                "$",
                format!("The request body is not valid JSON: {error}"),
            ))
        }
    };
    let mut errors = Errors::new();
    if strict {
        for key in object.keys() {
            if !schema.fields.iter().any(|field| field.name == key) {
                errors.entry(pascal(key)).or_default().push(format!(
                    "The JSON property '{key}' could not be mapped to any .NET member \
                     contained in type '{}'.",
                    schema.type_name
                ));
            }
        }
    }
    for field in schema.fields {
        let required = match field.need {
            Need::Required => true,
            Need::RequiredWhenStrict => strict,
            Need::Optional => false,
        };
        let problem = match object.get(field.name) {
            None | Some(Value::Null) if required => {
                Some(format!("The {} field is required.", pascal(field.name)))
            }
            None | Some(Value::Null) => None,
            Some(value) => type_error(field, value),
        };
        if let Some(message) = problem {
            errors.entry(pascal(field.name)).or_default().push(message);
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors)
    }
}

/// Why `value` does not bind to `field`, in ASP.NET's words; `None` when it does.
fn type_error(field: &Field, value: &Value) -> Option<String> {
    let (fits, target) = match field.kind {
        Kind::Text => (value.is_string(), "System.String"),
        Kind::Id => {
            let number = match value {
                Value::Number(number) => number.as_i64(),
                Value::String(text) => text.trim().parse::<i64>().ok(),
                _ => None,
            };
            (number.is_some(), "System.Int64")
        }
    };
    (!fits).then(|| {
        format!(
            "The JSON value could not be converted to {target}. Path: $.{}.",
            field.name
        )
    })
}

/// The media types ASP.NET's JSON input formatter reads.
fn is_json(content_type: &str) -> bool {
    let essence = content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    essence == "application/json"
        || essence == "text/json"
        || (essence.starts_with("application/") && essence.ends_with("+json"))
}

/// ASP.NET names fields in `errors` after the .NET property: `accountId` → `AccountId`.
fn pascal(name: &str) -> String {
    let mut chars = name.chars();
    chars
        .next()
        .map(|first| first.to_uppercase().chain(chars).collect())
        .unwrap_or_default()
}

fn one(field: &str, message: String) -> Errors {
    Errors::from([(field.to_owned(), vec![message])])
}

#[cfg(test)]
mod tests {
    use super::*;

    const JSON: Option<&str> = Some("application/json; charset=utf-8");

    fn strict(call: Call, body: &str) -> Result<(), Errors> {
        bind(call, JSON, body.as_bytes(), true)
    }

    #[test]
    fn strict_requires_every_field_the_vendor_marks_required() {
        let errors =
            strict(Call::ActivateAudience, r#"{"audienceId": 1001}"#).expect_err("five missing");
        let fields: Vec<&str> = errors.keys().map(String::as_str).collect();
        assert_eq!(
            fields,
            ["AccountId", "Description", "EndDate", "Name", "StartDate"]
        );
        assert_eq!(
            errors["Description"],
            ["The Description field is required."]
        );
        // Outside strict, description stays optional.
        assert_eq!(
            bind(
                Call::ActivateAudience,
                None,
                br#"{"audienceId": 1, "accountId": 2, "name": "n", "startDate": "s", "endDate": "e"}"#,
                false
            ),
            Ok(())
        );
        for (call, body, missing) in [
            (Call::CreateAudience, r#"{"name": "n"}"#, "CampaignId"),
            (Call::CreateAudience, r#"{"campaignId": 1}"#, "Name"),
            (Call::UpdateAudience, r#"{"name": "n"}"#, "Id"),
            (Call::UpdateAudience, r#"{"id": 1, "name": null}"#, "Name"),
            (Call::DeleteAudience, "{}", "Id"),
            (Call::Login, r#"{"userName": "u"}"#, "Password"),
            (Call::Login, r#"{"password": "p"}"#, "UserName"),
            (Call::CreateCampaign, "{}", "Name"),
        ] {
            let errors = strict(call, body).expect_err(body);
            assert_eq!(
                errors,
                one(missing, format!("The {missing} field is required.")),
                "{body}"
            );
        }
        assert_eq!(
            strict(Call::CreateAudience, r#"{"name": "n", "campaignId": "1"}"#),
            Ok(()),
            "quoted numbers bind, as with ASP.NET's web defaults"
        );
    }

    #[test]
    fn strict_refuses_unknown_fields_wide_ids_and_other_media_types() {
        assert_eq!(
            strict(Call::DeleteAudience, r#"{"id": 1, "force": true}"#),
            Err(one(
                "Force",
                "The JSON property 'force' could not be mapped to any .NET member contained \
                 in type 'DeleteAudienceRequest'."
                    .to_owned()
            ))
        );
        assert_eq!(
            strict(Call::DeleteAudience, r#"{"id": 9223372036854775808}"#),
            Err(one(
                "Id",
                "The JSON value could not be converted to System.Int64. Path: $.id.".to_owned()
            ))
        );
        assert_eq!(
            strict(Call::DeleteAudience, r#"{"id": 9223372036854775807}"#),
            Ok(())
        );
        assert_eq!(strict(Call::LoadAudience(4_294_967_296), ""), Ok(()));
        assert_eq!(strict(Call::LoadAudience(1001), ""), Ok(()));
        for content_type in [
            None,
            Some("text/plain"),
            Some("application/x-www-form-urlencoded"),
        ] {
            assert_eq!(
                bind(Call::DeleteAudience, content_type, br#"{"id": 1}"#, true),
                Err(one(
                    "$",
                    "The request body must be sent with Content-Type: application/json.".to_owned()
                )),
                "{content_type:?}"
            );
        }
        for content_type in [
            "application/json",
            "Application/JSON",
            "application/problem+json",
        ] {
            assert_eq!(
                bind(
                    Call::DeleteAudience,
                    Some(content_type),
                    br#"{"id": 1}"#,
                    true
                ),
                Ok(())
            );
        }
    }

    #[test]
    fn lenient_binding_names_fields_but_keeps_the_contract_rules() {
        let lenient = |call, body: &str| bind(call, None, body.as_bytes(), false);
        assert_eq!(
            lenient(Call::DeleteAudience, r#"{"id": 4294967296, "force": true}"#),
            Ok(())
        );
        assert_eq!(
            lenient(Call::CreateAudience, r#"{"name": 5, "campaignId": "one"}"#),
            Err(Errors::from([
                (
                    "CampaignId".to_owned(),
                    vec!["The JSON value could not be converted to System.Int64. Path: $.campaignId.".to_owned()]
                ),
                (
                    "Name".to_owned(),
                    vec!["The JSON value could not be converted to System.String. Path: $.name.".to_owned()]
                ),
            ]))
        );
        assert_eq!(
            lenient(Call::CreateAudience, "[1, 2]"),
            Err(one(
                "$",
                "The JSON value could not be converted to CreateCrmAudienceRequest.".to_owned()
            ))
        );
        let malformed = lenient(Call::CreateAudience, "{\"id\":").expect_err("malformed");
        assert!(malformed["$"][0].starts_with("The request body is not valid JSON: "));
        assert_eq!(lenient(Call::LoadPlatformAccounts, ""), Ok(()));
    }
}
