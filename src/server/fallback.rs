//! What answers a request no route took: `405` with `Allow` on a documented path, `404`
//! elsewhere, from the paths and methods of the OpenAPI document.

use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse, ResponseError};

use crate::error::ApiError;

/// The documented paths (as segments) with the `Allow` value of each, so that a request no
/// route took gets `405` on a known path and `404` elsewhere.
pub struct KnownPaths(Vec<(Vec<String>, String)>);

impl KnownPaths {
    /// The paths and methods of `spec`.
    pub fn new(spec: &utoipa::openapi::OpenApi) -> Self {
        let paths = crate::openapi::methods_by_path(spec)
            .into_iter()
            .map(|(path, methods)| {
                let segments = path.split('/').map(str::to_string).collect();
                (segments, methods.join(", "))
            })
            .collect();
        Self(paths)
    }

    fn allow(&self, path: &str) -> Option<&str> {
        let given: Vec<&str> = path.split('/').collect();
        self.0
            .iter()
            .find(|(template, _)| {
                template.len() == given.len()
                    && template.iter().zip(&given).all(|(t, g)| {
                        t == g || (t.starts_with('{') && t.ends_with('}') && !g.is_empty())
                    })
            })
            .map(|(_, allow)| allow.as_str())
    }
}

/// The default service.
pub async fn unmatched(req: HttpRequest, known: web::Data<KnownPaths>) -> HttpResponse {
    match known.allow(req.path()) {
        Some(allow) => {
            let mut resp = ApiError::MethodNotAllowed.error_response();
            if let Ok(v) = header::HeaderValue::from_str(allow) {
                resp.headers_mut().insert(header::ALLOW, v);
            }
            resp
        }
        None => ApiError::RouteNotFound.error_response(),
    }
}

/// `/docs` to `/docs/`, where Swagger UI is served.
pub async fn docs_redirect() -> HttpResponse {
    HttpResponse::PermanentRedirect()
        .insert_header((header::LOCATION, "/docs/"))
        .finish()
}
