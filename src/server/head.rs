//! Head limits: a request whose header fields add up to more than
//! `server.max_header_bytes` is refused with `431` (`headers_too_large`) before any other
//! layer looks at them. (A head actix-http cannot parse at all never becomes a request:
//! see [`super::connection`].)

use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::middleware::Next;
use actix_web::{web, ResponseError};

use crate::error::ApiError;

/// The limits this layer applies (`web::Data<HeadLimits>`).
#[derive(Debug, Clone, Copy)]
pub struct HeadLimits {
    pub max_header_bytes: usize,
}

/// The layer described in the module docs.
pub async fn layer(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<EitherBody<impl MessageBody>>, actix_web::Error> {
    let limit = req
        .app_data::<web::Data<HeadLimits>>()
        .map_or(16 * 1024, |l| l.max_header_bytes);
    let head_bytes: usize = req
        .headers()
        .iter()
        .map(|(k, v)| k.as_str().len() + v.len() + 4)
        .sum();
    if head_bytes > limit {
        let refused = ApiError::HeadersTooLarge { limit }.error_response();
        return Ok(req.into_response(refused).map_into_right_body());
    }
    Ok(next.call(req).await?.map_into_left_body())
}
