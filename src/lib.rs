//! audience-gateway: a JWT-authenticated REST gateway over the Digital Audience API.
//!
//! [`startup::Application`] is the one builder that `main`, the tests and the benchmarks
//! use, so tests run exactly what ships.

pub mod audit;
pub mod auth;
pub mod cache;
pub mod cli;
pub mod coherence;
pub mod domain;
pub mod error;
pub mod idempotency;
pub mod ledger;
pub mod limits;
pub mod metrics;
pub mod openapi;
pub mod redis;
pub mod routes;
pub mod scope;
pub mod server;
pub mod settings;
pub mod startup;
pub mod state;
pub mod telemetry;
pub mod upstream;

pub use startup::Application;
pub use state::AppState;
