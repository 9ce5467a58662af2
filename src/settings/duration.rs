//! Durations read from whole numbers, so a setting keeps the unit in its name
//! (`upstream.request_timeout_ms = 10000`) while the code holds a `Duration`.

use std::time::Duration;

use serde::{Deserialize, Deserializer};

/// A number of milliseconds.
pub fn millis<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    u64::deserialize(d).map(Duration::from_millis)
}

/// A number of seconds.
pub fn secs<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    u64::deserialize(d).map(Duration::from_secs)
}

/// A number of seconds, or nothing.
pub fn opt_secs<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    Option::<u64>::deserialize(d).map(|v| v.map(Duration::from_secs))
}
