//! Black-box tests: the real server on 127.0.0.1:0 over HTTP, against the project's own
//! simulator of the upstream or a wiremock server. One test binary keeps link time down.

mod audiences;
mod audit;
mod auth;
mod auth_keys;
mod auth_scopes;
mod bad_requests;
mod cache;
mod cache_layer;
mod campaigns;
mod config_check;
mod cors;
mod fault_suite;
mod faults;
mod forwarding;
mod helpers;
mod hostile;
mod idempotency;
mod ledger;
mod ledger_requests;
mod lifecycle;
mod metrics_chart;
mod openapi;
mod ops;
mod platform_accounts;
mod rate_limit;
mod redis;
mod redis_access;
mod redis_outages;
mod secrets;
mod smoke;
mod traces;
mod upstream;
mod vendor_faults;
mod vendor_styles;
