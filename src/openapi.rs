//! The OpenAPI 3.1 document: collected from the routes by utoipa-actix-web, completed here
//! with info, the bearer security scheme, the error responses every operation can give
//! (defined once under `components/responses` and referenced), the `X-Request-Id` header of
//! every response, and an example on every body.

use std::collections::BTreeMap;
use std::time::Duration;

use actix_web::App;
use utoipa::openapi::example::ExampleBuilder;
use utoipa::openapi::extensions::Extensions;
use utoipa::openapi::link::LinkBuilder;
use utoipa::openapi::path::{Operation, PathItem};
use utoipa::openapi::response::ResponseBuilder;
use utoipa::openapi::schema::{AllOfBuilder, AnyOfBuilder, ObjectBuilder, Schema, Type};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{Content, ContentBuilder, Header, HeaderBuilder, OpenApi, Ref, RefOr};
use utoipa::openapi::{Response, Responses};
use utoipa::{Modify, OpenApi as _, ToSchema};
use utoipa_actix_web::AppExt;

use crate::domain::MAX_NAME_LEN;
use crate::error::{ApiError, Problem, PROBLEM_JSON};

#[derive(utoipa::OpenApi)]
#[openapi(
    info(
        title = "audience-gateway",
        description = "The company's REST API over the Digital Audience API: campaigns, CRM audiences, their insights and uploads, and activations on ad platform accounts.\n\nEvery `/v1` operation needs a JWT bearer token with the scope named in its security requirement (`audiences:read`, `audiences:write`, `audiences:delete`, `audiences:activate`; `cache:purge` for operators). Errors are RFC 9457 `application/problem+json` bodies with a stable `code` and the `requestId`; every response carries the request id in `X-Request-Id`.\n\nFrontends can call it with the typed TypeScript client `@audience-gateway/client`, generated from this document (`clients/typescript` in the gateway's repository).",
        license(name = "Apache-2.0", identifier = "Apache-2.0"),
        contact(name = "Audience platform team", email = "audience-platform@example.com"),
    ),
    // Relative, so the document names no host and "Try it out" calls the gateway serving it.
    servers((url = "/", description = "The gateway serving this document")),
    tags(
        (name = "campaigns", description = "Campaigns that group audiences"),
        (name = "audiences", description = "CRM audiences: read (cached), write, delete, activate"),
        (name = "platform-accounts", description = "Ad platform accounts to activate audiences on"),
        (name = "operations", description = "Health, readiness and metrics (no token needed)"),
    ),
    components(schemas(Problem)),
)]
struct ApiDoc;

/// Builds the complete document from the same route registration the server uses.
pub fn spec() -> OpenApi {
    let (_, mut api) = App::new()
        .into_utoipa_app()
        .openapi(ApiDoc::openapi())
        .configure(crate::routes::configure)
        .configure(crate::routes::health::configure)
        .split_for_parts();
    Completion.modify(&mut api);
    api.info.version = env!("CARGO_PKG_VERSION").to_string();
    api
}

/// The document as the committed, pretty-printed JSON text (with a final newline).
pub fn spec_json() -> String {
    let mut text = spec().to_pretty_json().unwrap_or_default();
    text.push('\n');
    text
}

/// Each documented path with the methods it answers, in document order.
pub fn methods_by_path(api: &OpenApi) -> Vec<(String, Vec<&'static str>)> {
    api.paths
        .paths
        .iter()
        .map(|(path, item)| {
            let methods = [
                ("GET", &item.get),
                ("PUT", &item.put),
                ("POST", &item.post),
                ("DELETE", &item.delete),
                ("OPTIONS", &item.options),
                ("HEAD", &item.head),
                ("PATCH", &item.patch),
                ("TRACE", &item.trace),
            ];
            let methods = methods
                .into_iter()
                .filter(|(_, op)| op.is_some())
                .map(|(m, _)| m)
                .collect();
            (path.clone(), methods)
        })
        .collect()
}

fn operations_mut(item: &mut PathItem) -> impl Iterator<Item = &mut Operation> {
    [
        &mut item.get,
        &mut item.put,
        &mut item.post,
        &mut item.delete,
        &mut item.options,
        &mut item.head,
        &mut item.patch,
        &mut item.trace,
    ]
    .into_iter()
    .flatten()
}

struct Completion;

const REQUEST_ID_EXAMPLE: &str = "3f1c1f1e-6a4b-4f0e-9a55-2d1f7f0f9c1a";

/// Error responses shared by operations: component name, description, and the errors behind
/// it (all of one status), each shown as a named example.
fn shared_errors() -> Vec<(&'static str, &'static str, Vec<ApiError>)> {
    vec![
        (
            "BadRequest",
            "Malformed request: invalid JSON, path parameter, header, query parameter or cursor",
            vec![
                ApiError::InvalidBody {
                    detail: "the body is not valid JSON: expected value".into(),
                    field: None,
                },
                ApiError::InvalidPath {
                    field: "id".into(),
                    detail: "id: must be an integer".into(),
                },
                ApiError::InvalidHeader {
                    field: "Idempotency-Key".into(),
                    detail: "must be 1 to 255 visible ASCII characters".into(),
                },
                ApiError::InvalidQuery {
                    field: "limit".into(),
                    detail: "must be an integer".into(),
                },
                ApiError::InvalidCursor,
            ],
        ),
        (
            "Unauthorized",
            "Missing or invalid bearer token (`WWW-Authenticate: Bearer error=\"invalid_token\"`)",
            vec![ApiError::Unauthorized {
                detail: "a bearer token is required".into(),
            }],
        ),
        (
            "Forbidden",
            "The token lacks the scope this operation needs (`error=\"insufficient_scope\"`)",
            vec![ApiError::Forbidden {
                scope: "audiences:write",
            }],
        ),
        (
            "NotFound",
            "The audience (or, by flow id, the activation) does not exist",
            vec![ApiError::NotFound {
                what: "audience 1001".into(),
            }],
        ),
        (
            "Conflict",
            "A request with this Idempotency-Key is still in progress",
            vec![ApiError::IdempotencyInFlight],
        ),
        (
            "PreconditionFailed",
            "The audience changed since the `If-Match` ETag was read",
            vec![ApiError::PreconditionFailed],
        ),
        (
            "PayloadTooLarge",
            "The request body is too large",
            vec![ApiError::PayloadTooLarge { limit: 65_536 }],
        ),
        (
            "UnsupportedMediaType",
            "The request body must be `application/json`",
            vec![ApiError::UnsupportedMediaType],
        ),
        (
            "UnprocessableEntity",
            "Validation failed (the `field` names the culprit), the upstream refused the request, or the Idempotency-Key was reused with another body",
            vec![
                ApiError::field("name", "must not be blank"),
                ApiError::UpstreamRejected {
                    message: "The account 999 does not exist.".into(),
                    field: Some("accountId".into()),
                },
                ApiError::IdempotencyMismatch,
            ],
        ),
        (
            "TooManyRequests",
            "Activation rate limit exhausted; see `Retry-After`",
            vec![ApiError::RateLimited {
                retry_after: Duration::from_secs(12),
            }],
        ),
        (
            "InternalError",
            "Unexpected gateway error",
            vec![ApiError::Internal],
        ),
        (
            "BadGateway",
            "The Digital Audience API failed, or answered something the gateway cannot read (after a create or activation with `upstream_response_unreadable`, the change may have been made: retry with the same Idempotency-Key to get this same answer, never a duplicate)",
            vec![
                ApiError::UpstreamFailure,
                ApiError::UpstreamResponseUnreadable,
                ApiError::UpstreamDataUnreadable {
                    part: "crmData.size: invalid value: string \"many\", expected an integer, a numeric string or null".into(),
                },
            ],
        ),
        (
            "ServiceUnavailable",
            "The Digital Audience API, the JWKS endpoint, (for activations) the shared rate-limit store or (for the activation history) the ledger database is unavailable; see `Retry-After` when present",
            vec![
                ApiError::UpstreamUnavailable {
                    retry_after: Some(Duration::from_secs(30)),
                },
                ApiError::KeysUnavailable,
                ApiError::RateLimitUnavailable {
                    retry_after: Duration::from_secs(1),
                },
                ApiError::LedgerUnavailable,
            ],
        ),
        (
            "GatewayTimeout",
            "The Digital Audience API did not answer in time",
            vec![ApiError::UpstreamTimeout],
        ),
    ]
}

fn string_header(description: &str, example: &str) -> Header {
    HeaderBuilder::new()
        .schema(
            ObjectBuilder::new()
                .schema_type(Type::String)
                .examples([serde_json::json!(example)]),
        )
        .description(Some(description))
        .build()
}

fn request_id_header() -> Header {
    string_header(
        "Request id: the caller's `X-Request-Id` when acceptable, otherwise a new UUID",
        REQUEST_ID_EXAMPLE,
    )
}

fn error_response(description: &str, errors: &[ApiError]) -> (u16, Response) {
    let status = errors.first().map_or(500, |e| e.table().0.as_u16());
    let examples = errors.iter().map(|e| {
        let mut problem = e.problem();
        problem.request_id = Some(REQUEST_ID_EXAMPLE.into());
        let example = ExampleBuilder::new()
            .summary(problem.detail.clone())
            .value(serde_json::to_value(&problem).ok())
            .build();
        (problem.code, example)
    });
    let mut b = ResponseBuilder::new()
        .description(description)
        .content(
            PROBLEM_JSON,
            ContentBuilder::new()
                .schema(Some(Ref::from_schema_name(Problem::name())))
                .examples_from_iter(examples)
                .build(),
        )
        .header("X-Request-Id", request_id_header());
    let challenge = match status {
        401 => Some("Bearer realm=\"audience-gateway\", error=\"invalid_token\", error_description=\"a bearer token is required\""),
        403 => Some("Bearer realm=\"audience-gateway\", error=\"insufficient_scope\", scope=\"audiences:write\""),
        _ => None,
    };
    if let Some(challenge) = challenge {
        b = b.header(
            "WWW-Authenticate",
            string_header("Bearer challenge with the error code", challenge),
        );
    }
    if status == 429 || status == 503 {
        b = b.header(
            "Retry-After",
            string_header("Seconds to wait before retrying", "12"),
        );
    }
    if status == 429 {
        b = b
            .header(
                "RateLimit-Policy",
                string_header("Quota policies", "\"per-caller\";q=10;w=60"),
            )
            .header(
                "RateLimit",
                string_header(
                    "Remaining quota and seconds to reset",
                    "\"per-caller\";r=0;t=12",
                ),
            );
    }
    (status, b.build())
}

/// Which shared errors an operation can give.
fn errors_for(op: &Operation, has_id: bool) -> Vec<u16> {
    let op_id = op.operation_id.as_deref().unwrap_or_default();
    let has_body = op.request_body.is_some();
    let has_idempotency_key = op
        .parameters
        .iter()
        .flatten()
        .any(|p| p.name == "Idempotency-Key");
    let mut codes = vec![401, 403, 500, 502, 503, 504];
    if has_body || has_id || has_idempotency_key {
        codes.push(400);
    }
    if has_body {
        codes.extend([413, 415, 422]);
    }
    if has_id {
        codes.extend([404, 422]);
    }
    match op_id {
        "updateAudience" | "deleteAudience" => codes.push(412),
        "activateAudience" | "createAudience" => codes.extend([409, 422]),
        _ => {}
    }
    if op_id == "activateAudience" {
        codes.push(429);
    }
    codes.sort_unstable();
    codes.dedup();
    codes
}

/// The example of the component schema `schema` refers to, if any.
fn component_example(
    schemas: &BTreeMap<String, RefOr<Schema>>,
    schema: Option<&RefOr<Schema>>,
) -> Option<serde_json::Value> {
    let Some(RefOr::Ref(r)) = schema else {
        return None;
    };
    let name = r.ref_location.rsplit('/').next()?;
    match schemas.get(name)? {
        RefOr::T(Schema::Object(o)) => o.example.clone(),
        _ => None,
    }
}

/// Shows the schema's example on a body that has none of its own (Swagger UI pre-fills
/// "Try it out" from it; Schemathesis sends it first).
fn fill_example(schemas: &BTreeMap<String, RefOr<Schema>>, content: &mut Content) {
    if content.example.is_none() && content.examples.is_empty() {
        content.example = component_example(schemas, content.schema.as_ref());
    }
}

/// Unicode `White_Space`, which Rust's `str::trim` removes, as a regex class body.
const WHITE_SPACE: &str =
    r"\t\n\u000b\u000c\r \u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000";
/// Control characters (`char::is_control`), as a regex class body.
const CONTROL: &str = r"\u0000-\u001f\u007f-\u009f";

/// The request fields `domain::check_name` validates.
const NAME_FIELDS: &[(&str, &str)] = &[
    ("NewCampaign", "name"),
    ("NewAudience", "name"),
    ("AudiencePatch", "name"),
    ("NewActivation", "name"),
];

/// What `domain::check_name` accepts: after trimming surrounding whitespace, 1 to
/// `MAX_NAME_LEN` characters without control characters. A pattern rather than `maxLength`,
/// because the limit applies after trimming (both count code points).
fn name_pattern() -> String {
    let (ws, cc) = (WHITE_SPACE, CONTROL);
    let inner = MAX_NAME_LEN - 2;
    format!("^[{ws}]*[^{ws}{cc}](?:[^{cc}]{{0,{inner}}}[^{ws}{cc}])?[{ws}]*$")
}

fn constrain_names(schemas: &mut BTreeMap<String, RefOr<Schema>>) {
    for (schema, field) in NAME_FIELDS {
        let Some(RefOr::T(Schema::Object(object))) = schemas.get_mut(*schema) else {
            continue;
        };
        if let Some(RefOr::T(Schema::Object(property))) = object.properties.get_mut(*field) {
            property.pattern = Some(name_pattern());
            let said = property.description.get_or_insert_with(String::new);
            said.push_str(" Surrounding whitespace is trimmed; control characters are refused.");
        }
    }
}

/// `AudiencePatch` fields are nullable (null keeps the current value) but a patch must change
/// something: at least one of them must be a string.
fn require_a_change(schemas: &mut BTreeMap<String, RefOr<Schema>>) {
    let Some(RefOr::T(patch)) = schemas.remove("AudiencePatch") else {
        return;
    };
    let given = |field: &str| {
        ObjectBuilder::new()
            .property(field, ObjectBuilder::new().schema_type(Type::String))
            .required(field)
    };
    let schema = AllOfBuilder::new()
        .item(patch)
        .item(
            AnyOfBuilder::new()
                .description(Some("Give `name` or `description` (or both) as a string"))
                .item(given("name"))
                .item(given("description")),
        )
        .build();
    schemas.insert("AudiencePatch".into(), RefOr::T(Schema::AllOf(schema)));
}

fn complete_responses(
    schemas: &BTreeMap<String, RefOr<Schema>>,
    op: &mut Operation,
    shared: &BTreeMap<u16, &str>,
    v1: bool,
    has_id: bool,
) {
    if v1 {
        for code in errors_for(op, has_id) {
            if let Some(name) = shared.get(&code) {
                op.responses
                    .responses
                    .entry(code.to_string())
                    .or_insert_with(|| RefOr::Ref(Ref::from_response_name(*name)));
            }
        }
    }
    if let Some(body) = op.request_body.as_mut() {
        body.content
            .values_mut()
            .for_each(|c| fill_example(schemas, c));
    }
    let Responses { responses, .. } = &mut op.responses;
    for response in responses.values_mut() {
        if let RefOr::T(response) = response {
            response
                .headers
                .entry("X-Request-Id".into())
                .or_insert_with(request_id_header);
            response
                .content
                .values_mut()
                .for_each(|c| fill_example(schemas, c));
        }
    }
}

impl Modify for Completion {
    fn modify(&self, api: &mut OpenApi) {
        let components = api.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .description(Some("A JWT (HS256, RS256 or ES256) whose `scope` claim holds the operation's scope"))
                    .build(),
            ),
        );
        let mut shared = BTreeMap::new();
        for (name, description, errors) in shared_errors() {
            let (status, response) = error_response(description, &errors);
            components
                .responses
                .insert(name.to_string(), RefOr::T(response));
            shared.insert(status, name);
        }
        for (path, item) in api.paths.paths.iter_mut() {
            let v1 = path.starts_with("/v1");
            let has_id = path.contains("{id}");
            for op in operations_mut(item) {
                complete_responses(&components.schemas, op, &shared, v1, has_id);
            }
        }
        constrain_names(&mut components.schemas);
        require_a_change(&mut components.schemas);
        add_links(api);
    }
}

/// A link an answer carries: (operation, status, link name, target operation, parameters,
/// description).
type LinkSpec = (
    &'static str,
    &'static str,
    &'static str,
    &'static str,
    &'static [(&'static str, &'static str)],
    &'static str,
);

const CREATED_ID: (&str, &str) = ("id", "$response.body#/id");
const SAME_ID: (&str, &str) = ("id", "$request.path.id");
const NEW_ETAG: (&str, &str) = ("header.If-Match", "$response.header.ETag");

/// Where answers lead (OpenAPI links): the calls a client (and Schemathesis' stateful phase)
/// may make next with values from the answer, including which history outlives a delete.
const LINKS: &[LinkSpec] = &[
    ("createAudience", "201", "GetAudience", "getAudience", &[CREATED_ID], "The audience just created"),
    ("createAudience", "201", "UpdateAudience", "updateAudience", &[CREATED_ID, NEW_ETAG], "Update it, conditional on the ETag the create answered"),
    ("createAudience", "201", "DeleteAudience", "deleteAudience", &[CREATED_ID, NEW_ETAG], "Delete it, conditional on the ETag the create answered"),
    ("createAudience", "201", "ActivateAudience", "activateAudience", &[CREATED_ID], "Activate it"),
    ("createAudience", "201", "ListAudienceActivations", "listAudienceActivations", &[CREATED_ID], "Its activation history: empty until it is activated"),
    ("updateAudience", "200", "UpdateAudience", "updateAudience", &[SAME_ID, NEW_ETAG], "Update it again, conditional on the new ETag"),
    ("updateAudience", "200", "DeleteAudience", "deleteAudience", &[SAME_ID, NEW_ETAG], "Delete it, conditional on the new ETag"),
    ("activateAudience", "201", "GetAudienceActivation", "getAudienceActivation", &[SAME_ID, ("flowId", "$response.body#/flowId")], "This activation in the history"),
    ("activateAudience", "201", "ListAudienceActivations", "listAudienceActivations", &[SAME_ID], "The history, this activation first; it is kept when the audience is deleted"),
    ("activateAudience", "201", "GetAudience", "getAudience", &[SAME_ID], "The audience changed (its activation status): read it for the ETag of a conditional write"),
    ("deleteAudience", "204", "GetAudience", "getAudience", &[SAME_ID], "404 from now on"),
    ("deleteAudience", "204", "ListAudienceActivations", "listAudienceActivations", &[SAME_ID], "Kept when the audience had activations (each with `audienceDeletedAt`); 404 when it had none"),
];

/// Adds [`LINKS`] to the answers they start from.
fn add_links(api: &mut OpenApi) {
    for item in api.paths.paths.values_mut() {
        for op in operations_mut(item) {
            for (from, status, name, to, parameters, description) in LINKS {
                if op.operation_id.as_deref() != Some(*from) {
                    continue;
                }
                let Some(RefOr::T(response)) = op.responses.responses.get_mut(*status) else {
                    continue;
                };
                // utoipa 5 writes `Link::operation_id` as `operation_id`; the OpenAPI field is
                // `operationId`, set here through the flattened extension map.
                let link = parameters
                    .iter()
                    .fold(LinkBuilder::new(), |l, (k, v)| l.parameter(*k, *v))
                    .description(*description)
                    .extensions(Some(Extensions::from_iter([("operationId", *to)])))
                    .build();
                response.links.insert((*name).to_string(), RefOr::T(link));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spec_is_deterministic() {
        assert_eq!(spec_json(), spec_json());
    }

    #[test]
    fn every_v1_operation_declares_auth_errors_and_a_scope() {
        let api = serde_json::to_value(spec()).unwrap();
        let paths = api["paths"].as_object().unwrap();
        let mut seen = 0;
        for (path, item) in paths.iter().filter(|(p, _)| p.starts_with("/v1")) {
            for (method, op) in item.as_object().unwrap() {
                seen += 1;
                let responses = op["responses"].as_object().unwrap();
                for code in ["401", "403", "502", "503", "504"] {
                    assert!(responses.contains_key(code), "{method} {path} lacks {code}");
                }
                let scopes = &op["security"][0]["bearer"];
                assert_eq!(scopes.as_array().map(Vec::len), Some(1), "{method} {path}");
            }
        }
        assert_eq!(seen, 12);
    }

    #[test]
    fn every_response_has_a_request_id_and_every_body_an_example() {
        let api = serde_json::to_value(spec()).unwrap();
        let shared = &api["components"]["responses"];
        for (path, item) in api["paths"].as_object().unwrap() {
            for (method, op) in item.as_object().unwrap() {
                let bodies = op["requestBody"]["content"].as_object().into_iter();
                for (status, response) in op["responses"].as_object().unwrap() {
                    let response = match response["$ref"].as_str() {
                        Some(r) => &shared[r.rsplit('/').next().unwrap()],
                        None => response,
                    };
                    let at = format!("{method} {path} {status}");
                    assert!(response["description"].is_string(), "{at}");
                    assert!(response["headers"]["X-Request-Id"].is_object(), "{at}");
                    for (media, content) in response["content"].as_object().into_iter().flatten() {
                        let has = content["example"].is_string()
                            || content["example"].is_object()
                            || content["examples"].is_object();
                        assert!(has, "{at} {media} has no example");
                    }
                }
                for (media, content) in bodies.flatten() {
                    assert!(content["example"].is_object(), "{method} {path} {media}");
                }
            }
        }
    }

    #[test]
    fn every_checked_name_carries_the_pattern() {
        let api = serde_json::to_value(spec()).unwrap();
        let schemas = &api["components"]["schemas"];
        for (schema, field) in NAME_FIELDS {
            let object = match schemas[schema].get("allOf") {
                Some(all) => &all[0],
                None => &schemas[schema],
            };
            let pattern = &object["properties"][field]["pattern"];
            assert_eq!(
                pattern.as_str(),
                Some(name_pattern().as_str()),
                "{schema}.{field}"
            );
        }
    }

    #[test]
    fn every_link_starts_from_a_documented_answer_and_names_a_documented_operation() {
        let api = serde_json::to_value(spec()).unwrap();
        let mut ids = std::collections::HashSet::new();
        let mut links = 0;
        let operations = || {
            api["paths"]
                .as_object()
                .unwrap()
                .values()
                .flat_map(|item| item.as_object().unwrap().values())
        };
        for op in operations() {
            ids.extend(op["operationId"].as_str().map(str::to_string));
        }
        let responses = operations()
            .filter_map(|op| op["responses"].as_object())
            .flat_map(|r| r.values());
        for response in responses {
            for link in response["links"].as_object().into_iter().flatten() {
                links += 1;
                let target = link.1["operationId"].as_str().unwrap_or_default();
                assert!(ids.contains(target), "{link:?}");
            }
        }
        assert_eq!(links, LINKS.len());
    }

    #[test]
    fn methods_by_path_lists_each_documented_method() {
        let methods: BTreeMap<_, _> = methods_by_path(&spec()).into_iter().collect();
        assert_eq!(methods["/v1/audiences/{id}"], ["GET", "DELETE", "PATCH"]);
        assert_eq!(methods["/healthz"], ["GET"]);
    }
}
