//! Black-box tests: the real server on 127.0.0.1:0 over HTTP, against the project's own
//! simulator of the upstream or a wiremock server. One test binary keeps link time down.

mod auth;
mod cache;
mod cache_layer;
mod faults;
mod helpers;
mod hostile;
mod idempotency;
mod lifecycle;
mod openapi;
mod ops;
mod rate_limit;
mod redis;
mod routes;
mod secrets;
mod smoke;
mod upstream;
mod vendor_faults;
