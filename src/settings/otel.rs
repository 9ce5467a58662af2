//! `otel.*`: OpenTelemetry traces, exported over OTLP/HTTP. Off unless `exporter = "otlp"`.
//!
//! The standard `OTEL_*` environment variables set the same things and, when set, win over
//! this table (and over `GATEWAY_OTEL__*`), the way every OpenTelemetry SDK reads them:
//!
//! | variable | setting |
//! |---|---|
//! | `OTEL_SDK_DISABLED=true` | `exporter = "none"` |
//! | `OTEL_TRACES_EXPORTER` (`otlp`, `none`) | `exporter` |
//! | `OTEL_EXPORTER_OTLP_ENDPOINT` (base URL; `/v1/traces` is appended) | `endpoint` |
//! | `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` (used as is) | `traces_endpoint` |
//! | `OTEL_EXPORTER_OTLP_[TRACES_]PROTOCOL` (`http/protobuf`) | `protocol` |
//! | `OTEL_EXPORTER_OTLP_[TRACES_]HEADERS` (`k=v,k2=v2`, secret) | `headers` |
//! | `OTEL_EXPORTER_OTLP_[TRACES_]TIMEOUT` (ms) | `timeout_ms` |
//! | `OTEL_SERVICE_NAME` | `service_name` |
//! | `OTEL_TRACES_SAMPLER`, `OTEL_TRACES_SAMPLER_ARG` | `sampler`, `sampler_arg` |
//! | `OTEL_RESOURCE_ATTRIBUTES` (`k=v,k2=v2`) | `resource_attributes` |

use std::collections::HashMap;
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};

use super::{duration, SettingsError};

/// Trace export settings.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct OtelSettings {
    pub exporter: OtelExporter,
    /// The collector's base URL; traces go to `<endpoint>/v1/traces`.
    pub endpoint: String,
    /// The full traces URL, instead of `endpoint` + `/v1/traces`.
    pub traces_endpoint: Option<String>,
    /// Only `http/protobuf`: the gateway exports over the HTTP client it already has.
    pub protocol: String,
    /// Headers sent with every export (`k=v,k2=v2`), e.g. a collector's API key.
    #[serde(serialize_with = "super::redacted")]
    pub headers: Option<SecretString>,
    /// Bound of one export request.
    #[serde(rename = "timeout_ms", with = "duration::millis")]
    pub timeout: Duration,
    /// `service.name`; when unset, the one among `resource_attributes`, else
    /// `audience-gateway`.
    pub service_name: Option<String>,
    pub sampler: Sampler,
    /// The ratio of the `traceidratio` samplers, 0 to 1.
    pub sampler_arg: f64,
    /// Extra resource attributes, `k=v,k2=v2` (values may be percent-encoded).
    pub resource_attributes: String,
}

/// Where spans go.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum OtelExporter {
    None,
    Otlp,
}

/// Which traces are recorded (the `OTEL_TRACES_SAMPLER` values). The `parentbased_` ones
/// follow the caller's sampled flag when it sends a `traceparent`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Sampler {
    AlwaysOn,
    AlwaysOff,
    #[serde(rename = "traceidratio")]
    TraceIdRatio,
    ParentbasedAlwaysOn,
    ParentbasedAlwaysOff,
    #[serde(rename = "parentbased_traceidratio")]
    ParentbasedTraceIdRatio,
}

impl Default for OtelSettings {
    fn default() -> Self {
        Self {
            exporter: OtelExporter::None,
            endpoint: "http://localhost:4318".into(),
            traces_endpoint: None,
            protocol: "http/protobuf".into(),
            headers: None,
            timeout: Duration::from_secs(10),
            service_name: None,
            sampler: Sampler::ParentbasedAlwaysOn,
            sampler_arg: 1.0,
            resource_attributes: String::new(),
        }
    }
}

/// Fails naming the setting, its `OTEL_*` variable and what is expected.
fn invalid(setting: &str, var: &str, expected: &str, found: &str) -> SettingsError {
    SettingsError(format!(
        "{} (env {var}): expected {expected}, found `{found}`",
        setting
    ))
}

impl OtelSettings {
    /// Applies the `OTEL_*` variables of `env` over the table.
    pub(super) fn apply_env(&mut self, env: &HashMap<String, String>) -> Result<(), SettingsError> {
        let var = |names: &[&str]| -> Option<String> {
            names
                .iter()
                .find_map(|n| env.get(*n))
                .map(|v| v.trim().to_string())
                .filter(|v| !v.is_empty())
        };
        if let Some(v) = var(&["OTEL_TRACES_EXPORTER"]) {
            self.exporter = match v.to_ascii_lowercase().as_str() {
                "otlp" => OtelExporter::Otlp,
                "none" => OtelExporter::None,
                _ => {
                    return Err(invalid(
                        "otel.exporter",
                        "OTEL_TRACES_EXPORTER",
                        "`otlp` or `none`",
                        &v,
                    ))
                }
            };
        }
        if let Some(v) = var(&["OTEL_SDK_DISABLED"]) {
            if v.eq_ignore_ascii_case("true") {
                self.exporter = OtelExporter::None;
            }
        }
        if let Some(v) = var(&["OTEL_EXPORTER_OTLP_ENDPOINT"]) {
            self.endpoint = v;
        }
        if let Some(v) = var(&["OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"]) {
            self.traces_endpoint = Some(v);
        }
        if let Some(v) = var(&[
            "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
            "OTEL_EXPORTER_OTLP_PROTOCOL",
        ]) {
            self.protocol = v;
        }
        if let Some(v) = var(&[
            "OTEL_EXPORTER_OTLP_TRACES_HEADERS",
            "OTEL_EXPORTER_OTLP_HEADERS",
        ]) {
            self.headers = Some(v.into());
        }
        if let Some(v) = var(&[
            "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT",
            "OTEL_EXPORTER_OTLP_TIMEOUT",
        ]) {
            let ms = v.parse::<u64>().map_err(|_| {
                invalid(
                    "otel.timeout_ms",
                    "OTEL_EXPORTER_OTLP_TIMEOUT",
                    "milliseconds",
                    &v,
                )
            })?;
            self.timeout = Duration::from_millis(ms);
        }
        if let Some(v) = var(&["OTEL_TRACES_SAMPLER"]) {
            self.sampler = Sampler::deserialize(serde::de::value::StrDeserializer::<
                serde::de::value::Error,
            >::new(&v.to_ascii_lowercase()))
            .map_err(|_| {
                invalid(
                    "otel.sampler",
                    "OTEL_TRACES_SAMPLER",
                    "always_on, always_off, traceidratio, parentbased_always_on, parentbased_always_off or parentbased_traceidratio",
                    &v,
                )
            })?;
        }
        if let Some(v) = var(&["OTEL_TRACES_SAMPLER_ARG"]) {
            self.sampler_arg = v.parse().map_err(|_| {
                invalid(
                    "otel.sampler_arg",
                    "OTEL_TRACES_SAMPLER_ARG",
                    "a ratio from 0 to 1",
                    &v,
                )
            })?;
        }
        if let Some(v) = var(&["OTEL_RESOURCE_ATTRIBUTES"]) {
            self.resource_attributes = v;
        }
        // The service name wins over `service.name` among the resource attributes.
        if let Some(v) = var(&["OTEL_SERVICE_NAME"]) {
            self.service_name = Some(v);
        }
        Ok(())
    }

    /// Checks what the types cannot express.
    pub fn validate(&self) -> Result<(), SettingsError> {
        if self.exporter == OtelExporter::None {
            return Ok(());
        }
        let url = self.traces_url();
        let parsed = reqwest::Url::parse(&url);
        if !parsed.is_ok_and(|u| matches!(u.scheme(), "http" | "https")) {
            return Err(invalid(
                "otel.endpoint",
                "OTEL_EXPORTER_OTLP_ENDPOINT",
                "an absolute http(s) URL",
                &url,
            ));
        }
        if self.protocol != "http/protobuf" {
            return Err(invalid(
                "otel.protocol",
                "OTEL_EXPORTER_OTLP_PROTOCOL",
                "`http/protobuf` (the only protocol this gateway exports with)",
                &self.protocol,
            ));
        }
        if !(0.0..=1.0).contains(&self.sampler_arg) {
            return Err(invalid(
                "otel.sampler_arg",
                "OTEL_TRACES_SAMPLER_ARG",
                "a ratio from 0 to 1",
                &self.sampler_arg.to_string(),
            ));
        }
        if let Some(name) = self.service_name.as_deref().filter(|n| n.trim().is_empty()) {
            return Err(invalid(
                "otel.service_name",
                "OTEL_SERVICE_NAME",
                "a name",
                name,
            ));
        }
        if pairs(&self.resource_attributes).any(|p| p.is_none()) {
            return Err(invalid(
                "otel.resource_attributes",
                "OTEL_RESOURCE_ATTRIBUTES",
                "`key=value` pairs separated by commas",
                &self.resource_attributes,
            ));
        }
        if let Some(h) = &self.headers {
            if pairs(h.expose_secret()).any(|p| p.is_none()) {
                return Err(SettingsError(
                    "otel.headers (env OTEL_EXPORTER_OTLP_HEADERS): expected `key=value` pairs separated by commas"
                        .into(),
                ));
            }
        }
        Ok(())
    }

    /// Where spans are sent.
    pub fn traces_url(&self) -> String {
        match &self.traces_endpoint {
            Some(url) => url.clone(),
            None => format!("{}/v1/traces", self.endpoint.trim_end_matches('/')),
        }
    }

    /// The resource attributes, percent-decoded.
    pub fn resource_pairs(&self) -> Vec<(String, String)> {
        pairs(&self.resource_attributes).flatten().collect()
    }

    /// The `service.name` spans are exported under.
    pub fn effective_service_name(&self) -> String {
        self.service_name.clone().unwrap_or_else(|| {
            self.resource_pairs()
                .into_iter()
                .find(|(k, _)| k == "service.name")
                .map_or_else(|| "audience-gateway".into(), |(_, v)| v)
        })
    }

    /// The export headers, percent-decoded.
    pub fn header_pairs(&self) -> Vec<(String, String)> {
        self.headers
            .as_ref()
            .map(|h| pairs(h.expose_secret()).flatten().collect())
            .unwrap_or_default()
    }
}

/// The `k=v` pairs of a W3C-baggage-like list (the format of `OTEL_RESOURCE_ATTRIBUTES` and
/// `OTEL_EXPORTER_OTLP_HEADERS`), each percent-decoded; `None` for a malformed member.
fn pairs(list: &str) -> impl Iterator<Item = Option<(String, String)>> + '_ {
    list.split(',')
        .map(str::trim)
        .filter(|m| !m.is_empty())
        .map(|member| {
            let (k, v) = member.split_once('=')?;
            let k = k.trim();
            (!k.is_empty()).then(|| (percent_decode(k), percent_decode(v.trim())))
        })
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(b)) => {
                out.push(b);
                i += 3;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::super::tests::env;
    use super::*;

    #[test]
    fn off_by_default_and_on_with_the_standard_variables() {
        let mut s = OtelSettings::default();
        s.apply_env(&env(&[])).unwrap();
        assert_eq!(s.exporter, OtelExporter::None);
        s.apply_env(&env(&[
            ("OTEL_TRACES_EXPORTER", "otlp"),
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318/"),
            ("OTEL_SERVICE_NAME", "gw-eu"),
            ("OTEL_TRACES_SAMPLER", "parentbased_traceidratio"),
            ("OTEL_TRACES_SAMPLER_ARG", "0.01"),
            (
                "OTEL_RESOURCE_ATTRIBUTES",
                "deployment.environment=prod,team=ads%2Cdata",
            ),
            ("OTEL_EXPORTER_OTLP_TIMEOUT", "2500"),
        ]))
        .unwrap();
        s.validate().unwrap();
        assert_eq!(s.exporter, OtelExporter::Otlp);
        assert_eq!(s.traces_url(), "http://collector:4318/v1/traces");
        assert_eq!(s.effective_service_name(), "gw-eu");
        assert_eq!(s.sampler, Sampler::ParentbasedTraceIdRatio);
        assert_eq!(s.sampler_arg, 0.01);
        assert_eq!(s.timeout, Duration::from_millis(2500));
        assert_eq!(
            s.resource_pairs(),
            vec![
                ("deployment.environment".into(), "prod".into()),
                ("team".into(), "ads,data".into())
            ]
        );
        s.apply_env(&env(&[
            (
                "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
                "https://c.example/otlp/traces",
            ),
            ("OTEL_SDK_DISABLED", "true"),
        ]))
        .unwrap();
        assert_eq!(s.traces_url(), "https://c.example/otlp/traces");
        assert_eq!(s.exporter, OtelExporter::None);
    }

    #[test]
    fn the_service_name_variable_wins_over_the_resource_attribute() {
        let mut s = OtelSettings::default();
        assert_eq!(s.effective_service_name(), "audience-gateway");
        s.apply_env(&env(&[(
            "OTEL_RESOURCE_ATTRIBUTES",
            "service.name=from-attrs",
        )]))
        .unwrap();
        assert_eq!(s.effective_service_name(), "from-attrs");
        s.apply_env(&env(&[("OTEL_SERVICE_NAME", "from-name")]))
            .unwrap();
        assert_eq!(s.effective_service_name(), "from-name");
    }

    #[test]
    fn bad_values_name_the_variable() {
        for (key, value) in [
            ("OTEL_TRACES_EXPORTER", "jaeger"),
            ("OTEL_TRACES_SAMPLER", "sometimes"),
            ("OTEL_TRACES_SAMPLER_ARG", "half"),
            ("OTEL_EXPORTER_OTLP_TIMEOUT", "10s"),
        ] {
            let err = OtelSettings::default()
                .apply_env(&env(&[(key, value)]))
                .unwrap_err()
                .to_string();
            assert!(
                err.contains(key) || err.contains("OTEL_EXPORTER_OTLP_TIMEOUT"),
                "{err}"
            );
        }
        for (key, value) in [
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
            ("OTEL_TRACES_SAMPLER_ARG", "1.5"),
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "collector:4318"),
            ("OTEL_RESOURCE_ATTRIBUTES", "novalue"),
        ] {
            let mut s = OtelSettings::default();
            s.apply_env(&env(&[("OTEL_TRACES_EXPORTER", "otlp"), (key, value)]))
                .unwrap();
            let err = s.validate().unwrap_err().to_string();
            assert!(err.contains(key), "{key}: {err}");
        }
    }

    #[test]
    fn headers_are_secret() {
        let mut s = OtelSettings::default();
        s.apply_env(&env(&[
            ("OTEL_TRACES_EXPORTER", "otlp"),
            ("OTEL_EXPORTER_OTLP_HEADERS", "x-api-key=hunter2"),
        ]))
        .unwrap();
        s.validate().unwrap();
        assert_eq!(
            s.header_pairs(),
            vec![("x-api-key".into(), "hunter2".into())]
        );
        assert!(!format!("{s:?}").contains("hunter2"));
    }
}
