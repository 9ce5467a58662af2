//! Black-box tests: the real server on 127.0.0.1:0 over HTTP, against the project's own
//! simulator of the upstream or a wiremock server. One test binary keeps link time down.

mod cache;
mod faults;
mod helpers;
mod hostile;
mod lifecycle;
mod secrets;
mod rate_limit;
mod routes;
mod smoke;
