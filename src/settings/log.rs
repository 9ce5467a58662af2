//! `log.*`: the format and filter of log lines.

use serde::{Deserialize, Serialize};
use tracing_subscriber::EnvFilter;

use super::{with_env, SettingsError};

/// Log output settings.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogSettings {
    pub format: LogFormat,
    /// An `EnvFilter` directive such as `info` or `audience_gateway=debug,info`.
    pub level: String,
}

impl Default for LogSettings {
    fn default() -> Self {
        Self {
            format: LogFormat::Json,
            level: "info".into(),
        }
    }
}

impl LogSettings {
    /// Checks that `level` is a filter the subscriber accepts, so a typo stops start-up
    /// instead of logging at some other level.
    pub fn validate(&self) -> Result<(), SettingsError> {
        // `EnvFilter` reads a bare word as a target name, so `infoo` would parse (and log
        // nothing of interest): a directive without `=` or a span filter must be a level.
        let bare_non_level = directives(&self.level)
            .find(|d| !d.contains(['=', '[']) && !is_level(d))
            .map(str::to_string);
        let problem = match (bare_non_level, EnvFilter::try_new(&self.level)) {
            _ if self.level.trim().is_empty() => "it is empty".to_string(),
            (Some(word), _) => format!("`{word}` is not a level"),
            (None, Err(e)) => e.to_string(),
            (None, Ok(_)) => return Ok(()),
        };
        Err(SettingsError(format!(
            "{}: expected a level (off, error, warn, info, debug, trace) or directives such as `info,audience_gateway=debug`, found `{}`: {problem}",
            with_env("log.level"),
            self.level
        )))
    }
}

/// The comma-separated directives of a filter, trimmed; commas inside a span filter
/// (`[span{a=1,b=2}]`) do not separate.
fn directives(filter: &str) -> impl Iterator<Item = &str> {
    let mut depth = 0i32;
    let mut start = 0;
    let mut out = Vec::new();
    for (i, c) in filter.char_indices() {
        match c {
            '[' | '{' => depth += 1,
            ']' | '}' => depth -= 1,
            ',' if depth == 0 => {
                out.push(&filter[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(&filter[start..]);
    out.into_iter().map(str::trim).filter(|d| !d.is_empty())
}

fn is_level(word: &str) -> bool {
    ["off", "error", "warn", "info", "debug", "trace"]
        .iter()
        .any(|l| word.eq_ignore_ascii_case(l))
}

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Json,
    Text,
}
