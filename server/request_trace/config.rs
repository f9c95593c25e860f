//! `--trace-config`, in Triton's form: `<setting>=<value>` for the global settings (`level`, `rate`, `count`,
//! `mode`) and `opentelemetry,<setting>=<value>` for the exporter (`url`, `resource`, and the batch span
//! processor's `bsp_*`). Triton's own JSON trace files (`mode=triton`, `triton,file=...`) are not written:
//! inferd traces only through OpenTelemetry, and says so at start rather than ignoring the flag.
use std::time::Duration;

use super::settings::{Level, Values};
use super::MODE;

/// Triton's default collector address (OTLP over HTTP).
pub const DEFAULT_URL: &str = "http://localhost:4318/v1/traces";

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TraceConfig {
    /// The global settings at start.
    pub values: Values,
    /// Where spans are sent, OTLP over HTTP with protobuf bodies.
    pub url: String,
    /// Resource attributes (`service.name` and the like), in the order given.
    pub resource: Vec<(String, String)>,
    pub max_queue_size: usize,
    pub schedule_delay: Duration,
    pub max_export_batch_size: usize,
}

impl Default for TraceConfig {
    /// Triton's defaults (its batch span processor's included).
    fn default() -> Self {
        Self {
            values: Values::default(),
            url: DEFAULT_URL.to_string(),
            resource: Vec::new(),
            max_queue_size: 2048,
            schedule_delay: Duration::from_millis(5000),
            max_export_batch_size: 512,
        }
    }
}

fn number<T: std::str::FromStr>(setting: &str, value: &str) -> Result<T, String> {
    value
        .trim()
        .parse()
        .map_err(|_| format!("--trace-config {setting}={value}: expected a non-negative integer"))
}

impl TraceConfig {
    /// Reads every `--trace-config` given, in order (a later value wins; `level` may repeat, as Triton's).
    pub fn parse<S: AsRef<str>>(entries: &[S]) -> Result<Self, String> {
        let mut config = Self::default();
        let mut levels = Vec::new();
        for entry in entries {
            let entry = entry.as_ref();
            let (mode, setting) = match entry.split_once(',') {
                Some((mode, rest)) => (Some(mode.trim()), rest),
                None => (None, entry),
            };
            let (key, value) = setting
                .split_once('=')
                .ok_or_else(|| format!("--trace-config {entry}: expected [<mode>,]<setting>=<value>"))?;
            let key = key.trim();
            match (mode, key) {
                (None, "level") => levels.push(value.trim().to_string()),
                (None, "rate") => config.values.rate = number(key, value)?,
                (None, "count") => {
                    config.values.count = match value.trim().parse::<i32>() {
                        Ok(c) if c >= -1 => c,
                        _ => return Err(format!("--trace-config count={value}: expected -1 (no limit) or more")),
                    }
                }
                (None, "mode") if value.trim() == MODE => {}
                (None, "mode") | (Some("triton"), _) => {
                    return Err(format!(
                        "--trace-config {entry}: inferd traces only in OpenTelemetry mode (--trace-config \
                         mode={MODE}); Triton's JSON trace files are not written"
                    ))
                }
                (Some(MODE), "url") => config.url = value.trim().to_string(),
                (Some(MODE), "resource") => {
                    let (k, v) = value
                        .split_once('=')
                        .ok_or_else(|| format!("--trace-config {entry}: expected {MODE},resource=<key>=<value>"))?;
                    config.resource.push((k.trim().to_string(), v.trim().to_string()));
                }
                (Some(MODE), "bsp_max_queue_size") => config.max_queue_size = number(key, value)?,
                (Some(MODE), "bsp_schedule_delay") => {
                    config.schedule_delay = Duration::from_millis(number(key, value)?)
                }
                (Some(MODE), "bsp_max_export_batch_size") => config.max_export_batch_size = number(key, value)?,
                _ => {
                    return Err(format!(
                        "--trace-config {entry}: unknown setting (global: level, rate, count, mode; \
                         {MODE},: url, resource, bsp_max_queue_size, bsp_schedule_delay, bsp_max_export_batch_size)"
                    ))
                }
            }
        }
        if !levels.is_empty() {
            config.values.level = Level::parse(&levels).map_err(|e| format!("--trace-config level: {e}"))?;
        }
        if config.max_queue_size == 0 || config.max_export_batch_size == 0 {
            return Err("--trace-config: bsp_max_queue_size and bsp_max_export_batch_size must be above 0".into());
        }
        if config.max_export_batch_size > config.max_queue_size {
            return Err(format!(
                "--trace-config: bsp_max_export_batch_size ({}) must not exceed bsp_max_queue_size ({})",
                config.max_export_batch_size, config.max_queue_size
            ));
        }
        if !(config.url.starts_with("http://") || config.url.starts_with("https://")) {
            return Err(format!(
                "--trace-config {MODE},url={}: expected an http:// or https:// address (OTLP over HTTP)",
                config.url
            ));
        }
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_flag_gives_tritons_defaults() {
        let c = TraceConfig::parse::<&str>(&[]).unwrap();
        assert_eq!(c, TraceConfig::default());
        assert_eq!(c.values.level, Level::Off);
        assert_eq!((c.values.rate, c.values.count), (1000, -1));
    }

    #[test]
    fn tritons_opentelemetry_form_is_read() {
        let c = TraceConfig::parse(&[
            "mode=opentelemetry",
            "opentelemetry,url=http://collector:4318/v1/traces",
            "rate=1",
            "level=TIMESTAMPS",
            "count=100",
            "opentelemetry,resource=service.name=inferd",
            "opentelemetry,resource=deployment.environment=test=1",
            "opentelemetry,bsp_schedule_delay=100",
            "opentelemetry,bsp_max_queue_size=64",
            "opentelemetry,bsp_max_export_batch_size=8",
        ])
        .unwrap();
        assert_eq!(c.url, "http://collector:4318/v1/traces");
        assert_eq!(
            c.values,
            Values {
                level: Level::Timestamps,
                rate: 1,
                count: 100,
                log_frequency: 0
            }
        );
        assert_eq!(
            c.resource,
            [
                ("service.name".to_string(), "inferd".to_string()),
                ("deployment.environment".to_string(), "test=1".to_string())
            ]
        );
        assert_eq!(c.schedule_delay, Duration::from_millis(100));
        assert_eq!((c.max_queue_size, c.max_export_batch_size), (64, 8));
    }

    #[test]
    fn what_inferd_cannot_do_is_refused_at_start() {
        for (bad, says) in [
            ("mode=triton", "OpenTelemetry mode"),
            ("triton,file=/tmp/trace.json", "OpenTelemetry mode"),
            ("level=TENSORS", "TENSORS"),
            ("rate=-1", "non-negative"),
            ("count=-5", "-1"),
            ("opentelemetry,url=collector:4318", "http://"),
            ("opentelemetry,colour=blue", "unknown setting"),
            ("verbose", "<setting>=<value>"),
            ("opentelemetry,resource=service.name", "resource=<key>=<value>"),
        ] {
            let err = TraceConfig::parse(&[bad]).unwrap_err();
            assert!(err.contains(says), "{bad}: {err}");
        }
        let err = TraceConfig::parse(&[
            "opentelemetry,bsp_max_export_batch_size=10",
            "opentelemetry,bsp_max_queue_size=5",
        ])
        .unwrap_err();
        assert!(err.contains("must not exceed"), "{err}");
    }
}
