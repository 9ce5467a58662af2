//! The OpenAPI 3.1 document: collected from the routes by utoipa-actix-web, completed here
//! with info, the bearer security scheme, and the error responses every operation can give
//! (defined once under `components/responses` and referenced).

use std::collections::BTreeMap;

use actix_web::App;
use utoipa::openapi::path::Operation;
use utoipa::openapi::response::ResponseBuilder;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{ContentBuilder, HeaderBuilder, OpenApi, Ref, RefOr, Response};
use utoipa::{Modify, OpenApi as _, PartialSchema, ToSchema};
use utoipa_actix_web::AppExt;

use crate::error::{Problem, PROBLEM_JSON};

#[derive(utoipa::OpenApi)]
#[openapi(
    info(
        title = "audience-gateway",
        description = "The company's REST API over the Digital Audience API: campaigns, CRM audiences, their insights and uploads, and activations on ad platform accounts.\n\nEvery `/v1` operation needs a JWT bearer token with the scope named in its security requirement (`audiences:read`, `audiences:write`, `audiences:delete`, `audiences:activate`). Errors are RFC 9457 `application/problem+json` bodies with a stable `code` and the `requestId`.",
        license(name = "Apache-2.0", identifier = "Apache-2.0"),
        contact(name = "Audience platform team", email = "audience-platform@example.com"),
    ),
    tags(
        (name = "campaigns", description = "Campaigns that group audiences"),
        (name = "audiences", description = "CRM audiences: read (cached), write, delete, activate"),
        (name = "platform-accounts", description = "Ad platform accounts to activate audiences on"),
        (name = "operations", description = "Health, readiness and metrics (no token needed)"),
    ),
    components(schemas(Problem)),
    modifiers(&Completion)
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

struct Completion;

/// Error responses shared by operations: (status, component name, description).
const ERRORS: &[(u16, &str, &str)] = &[
    (400, "BadRequest", "Malformed request: invalid JSON, path parameter or header"),
    (401, "Unauthorized", "Missing or invalid bearer token (`WWW-Authenticate: Bearer error=\"invalid_token\"`)"),
    (403, "Forbidden", "The token lacks the scope this operation needs (`error=\"insufficient_scope\"`)"),
    (404, "NotFound", "The audience does not exist"),
    (409, "Conflict", "A request with this Idempotency-Key is still in progress"),
    (412, "PreconditionFailed", "The audience changed since the `If-Match` ETag was read"),
    (413, "PayloadTooLarge", "The request body is too large"),
    (415, "UnsupportedMediaType", "The request body must be `application/json`"),
    (422, "UnprocessableEntity", "Validation failed (the `field` names the culprit), the upstream refused the request, or the Idempotency-Key was reused with another body"),
    (429, "TooManyRequests", "Activation rate limit exhausted; see `Retry-After`"),
    (500, "InternalError", "Unexpected gateway error"),
    (502, "BadGateway", "The Digital Audience API failed or answered something unusable"),
    (503, "ServiceUnavailable", "The Digital Audience API (or the JWKS endpoint) is unavailable; see `Retry-After` when present"),
    (504, "GatewayTimeout", "The Digital Audience API did not answer in time"),
];

fn error_response(description: &str, status: u16) -> Response {
    let example = serde_json::json!({
        "type": "urn:audience-gateway:problem:example",
        "title": "Example",
        "status": status,
        "detail": description,
        "code": "example",
        "requestId": "3f1c1f1e-6a4b-4f0e-9a55-2d1f7f0f9c1a"
    });
    let mut b = ResponseBuilder::new().description(description).content(
        PROBLEM_JSON,
        ContentBuilder::new()
            .schema(Some(Ref::from_schema_name(Problem::name())))
            .example(Some(example))
            .build(),
    );
    b = b.header(
        "X-Request-Id",
        HeaderBuilder::new()
            .schema(String::schema())
            .description(Some("Request id"))
            .build(),
    );
    if status == 401 || status == 403 {
        b = b.header(
            "WWW-Authenticate",
            HeaderBuilder::new()
                .schema(String::schema())
                .description(Some("Bearer challenge with the error code"))
                .build(),
        );
    }
    if status == 429 || status == 503 {
        b = b.header(
            "Retry-After",
            HeaderBuilder::new()
                .schema(String::schema())
                .description(Some("Seconds to wait before retrying"))
                .build(),
        );
    }
    if status == 429 {
        for (name, text) in [
            ("RateLimit-Policy", "Quota policies"),
            ("RateLimit", "Remaining quota and seconds to reset"),
        ] {
            b = b.header(
                name,
                HeaderBuilder::new()
                    .schema(String::schema())
                    .description(Some(text))
                    .build(),
            );
        }
    }
    b.build()
}

/// Which shared errors an operation can give.
fn errors_for(op_id: &str, has_body: bool, has_id: bool) -> Vec<u16> {
    let mut codes = vec![400, 401, 403, 500, 502, 503, 504];
    if has_body {
        codes.extend([413, 415, 422]);
    }
    if has_id {
        codes.push(404);
        codes.push(422);
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
        for (status, name, description) in ERRORS {
            components.responses.insert(
                (*name).to_string(),
                RefOr::T(error_response(description, *status)),
            );
        }
        let names: BTreeMap<u16, &str> = ERRORS.iter().map(|(s, n, _)| (*s, *n)).collect();
        for (path, item) in api.paths.paths.iter_mut() {
            if !path.starts_with("/v1") {
                continue;
            }
            let has_id = path.contains("{id}");
            let ops: [&mut Option<Operation>; 4] = [
                &mut item.get,
                &mut item.post,
                &mut item.patch,
                &mut item.delete,
            ];
            for op in ops.into_iter().flatten() {
                let op_id = op.operation_id.clone().unwrap_or_default();
                for code in errors_for(&op_id, op.request_body.is_some(), has_id) {
                    let Some(name) = names.get(&code) else {
                        continue;
                    };
                    op.responses
                        .responses
                        .entry(code.to_string())
                        .or_insert_with(|| RefOr::Ref(Ref::from_response_name(*name)));
                }
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
        assert_eq!(seen, 9);
    }
}
