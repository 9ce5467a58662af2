//! The Digital Audience API client, in rooms:
//! - [`wire`]: the vendor's wire format, and the one function that reads every answer
//!   ([`wire::read`]); nothing else in the gateway knows the vendor's shape;
//! - `pipeline`: one pooled HTTP client with the vendor's cookie jar, deadlines, safe
//!   retries, bounded concurrency, the circuit breaker (`breaker`) and the session
//!   (`session`), acting only on the answers `wire` reads;
//! - `operations`: the typed calls, handing out the gateway's own types ([`record`]);
//! - `error`: why a call failed, and the caller's problem for it.
//!
//! How each vendor answer is read, and what the gateway does when the vendor does not
//! answer as assumed, is in docs/UPSTREAM.md.

mod breaker;
mod error;
mod operations;
mod pipeline;
mod record;
mod session;
mod wire;

pub use breaker::BreakerState;
pub use error::UpstreamError;
pub use operations::{read_audience, read_audience_only};
pub use pipeline::{backoff, UpstreamClient};
pub use record::{AudienceRecord, Unreadable};
