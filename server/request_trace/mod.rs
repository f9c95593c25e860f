//! Triton's trace extension, in its OpenTelemetry mode: the trace settings clients read and change at run time
//! (`settings`, server-wide and per model), `--trace-config` (`config`), the caller's W3C trace context
//! (`context`), and each sampled request's spans sent over OTLP (`export`). Beside the request's path: serving
//! asks it whether a request is traced and tells the trace what happened; the front-ends carry the caller's
//! context in, serve the settings, and end the trace once the response is encoded.
pub mod config;
pub mod context;
mod export;
pub mod settings;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::Instant;

pub use self::config::TraceConfig;
pub use self::context::{TraceParent, TRACEPARENT, TRACESTATE};
pub use self::export::ActiveTrace;
use self::export::Exporter;
use self::settings::Settings;
pub use self::settings::Update;
use crate::error::{InferError, InferResult};
use crate::request::InferRequest;

/// The one trace mode inferd has (Triton's name for it).
pub const MODE: &str = "opentelemetry";

/// A setting's value as the trace extension shows it: a string, or (`trace_level`) a list of strings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Shown {
    One(String),
    List(Vec<String>),
}

pub struct RequestTracer {
    settings: Mutex<Settings>,
    /// Whether any scope traces: when none does, a request costs one atomic load here.
    on: AtomicBool,
    url: String,
    /// None only for a server built without tracing (tests, benches): nothing is ever exported.
    exporter: Option<Exporter>,
}

impl RequestTracer {
    /// Tracing off and no exporter.
    pub fn off() -> Self {
        let config = TraceConfig::default();
        Self {
            settings: Mutex::new(Settings::new(config.values)),
            on: AtomicBool::new(false),
            url: config.url,
            exporter: None,
        }
    }

    /// The settings of `--trace-config`, and the exporter (started even with tracing off, since a client may
    /// turn it on at any time).
    pub fn start(config: &TraceConfig) -> Result<Self, String> {
        let exporter = Exporter::start(config)?;
        let settings = Settings::new(config.values);
        let on = settings.any_on();
        if on {
            tracing::info!(url = %config.url, rate = config.values.rate, "tracing requests with OpenTelemetry");
        }
        Ok(Self {
            settings: Mutex::new(settings),
            on: AtomicBool::new(on),
            url: config.url.clone(),
            exporter: Some(exporter),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Settings> {
        self.settings.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The settings in force for `model` (the global ones when `None`), as Triton lists them in this mode.
    pub fn settings(&self, model: Option<&str>) -> Vec<(&'static str, Shown)> {
        let v = self.lock().effective(model);
        vec![
            ("trace_level", Shown::List(vec![v.level.name().to_string()])),
            ("trace_rate", Shown::One(v.rate.to_string())),
            ("trace_count", Shown::One(v.count.to_string())),
            ("trace_mode", Shown::One(MODE.to_string())),
            ("url", Shown::One(self.url.clone())),
        ]
    }

    /// Applies a checked update at once, to `model` (which the caller has checked is served) or globally.
    pub fn update(&self, model: Option<&str>, update: Update) {
        let mut settings = self.lock();
        settings.apply(model, update);
        self.on.store(settings.any_on(), Ordering::Release);
        let v = settings.effective(model);
        tracing::info!(
            model = model.unwrap_or("(global)"),
            level = v.level.name(),
            rate = v.rate,
            count = v.count,
            "trace settings updated"
        );
    }

    /// Starts the trace of a request if it is sampled (its rate and count, or its caller's trace context).
    pub fn begin(&self, req: &InferRequest, received: Instant) -> Option<ActiveTrace> {
        if !self.on.load(Ordering::Acquire) {
            return None;
        }
        let exporter = self.exporter.as_ref()?;
        self.lock().sample(&req.model.name, req.trace_parent.is_some())?;
        Some(ActiveTrace::new(
            exporter,
            req.trace_parent.clone(),
            received,
            &req.model.name,
            &req.id,
            req.protocol,
        ))
    }

    /// Sends the spans still queued (blocking, bounded by the exporter's timeout).
    pub fn shutdown(&self) {
        if let Some(exporter) = &self.exporter {
            exporter.shutdown();
        }
    }
}

/// A REST update body: `{"trace_rate": "2", "trace_level": ["TIMESTAMPS"], "trace_count": null}`. Numbers are
/// taken as their text; anything else but a string, a list of strings or null is refused.
pub fn update_from_json(body: &serde_json::Value) -> InferResult<Update> {
    let object = body
        .as_object()
        .ok_or_else(|| InferError::invalid("the trace settings must be a JSON object"))?;
    let mut pairs = Vec::with_capacity(object.len());
    for (key, value) in object {
        let values = match value {
            serde_json::Value::Null => None,
            serde_json::Value::String(s) => Some(vec![s.clone()]),
            serde_json::Value::Number(n) => Some(vec![n.to_string()]),
            serde_json::Value::Array(items) => Some(
                items
                    .iter()
                    .map(|i| match i {
                        serde_json::Value::String(s) => Ok(s.clone()),
                        other => Err(InferError::invalid(format!(
                            "trace setting '{key}' must list strings, got {other}"
                        ))),
                    })
                    .collect::<InferResult<Vec<_>>>()?,
            ),
            other => {
                return Err(InferError::invalid(format!(
                    "trace setting '{key}' must be a string, a list of strings or null, got {other}"
                )))
            }
        };
        pairs.push((key.as_str(), values));
    }
    Update::parse(pairs.iter().map(|(k, v)| (*k, v.as_deref())))
}

/// The settings as a REST response body.
pub fn settings_json(settings: &[(&'static str, Shown)]) -> serde_json::Value {
    let map = settings
        .iter()
        .map(|(k, v)| {
            let v = match v {
                Shown::One(s) => serde_json::Value::from(s.as_str()),
                Shown::List(l) => serde_json::Value::from(l.clone()),
            };
            (k.to_string(), v)
        })
        .collect();
    serde_json::Value::Object(map)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model_name::ModelRef;
    use crate::request::Protocol;
    use settings::Level;

    #[test]
    fn a_rest_body_becomes_a_checked_update() {
        let u = update_from_json(&serde_json::json!({
            "trace_level": ["TIMESTAMPS"], "trace_rate": 2, "trace_count": null
        }))
        .unwrap();
        assert_eq!(u.rate, settings::Change::Set(2));
        assert_eq!(u.count, settings::Change::Clear);
        assert_eq!(u.level, settings::Change::Set(Level::Timestamps));
        for bad in [
            serde_json::json!([1]),
            serde_json::json!({"trace_rate": true}),
            serde_json::json!({"trace_level": [1]}),
            serde_json::json!({"trace_rate": "x"}),
        ] {
            assert!(update_from_json(&bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn settings_show_as_triton_lists_them_in_opentelemetry_mode() {
        let tracer = RequestTracer::off();
        let shown = settings_json(&tracer.settings(None));
        assert_eq!(
            shown,
            serde_json::json!({
                "trace_level": ["OFF"], "trace_rate": "1000", "trace_count": "-1",
                "trace_mode": "opentelemetry", "url": config::DEFAULT_URL
            })
        );
    }

    #[test]
    fn a_tracer_without_exporter_never_traces() {
        let tracer = RequestTracer::off();
        tracer.update(
            None,
            update_from_json(&serde_json::json!({"trace_level": ["TIMESTAMPS"], "trace_rate": "1"})).unwrap(),
        );
        let req = InferRequest::new(ModelRef::parse("m", None).unwrap(), Protocol::Http);
        assert!(tracer.begin(&req, Instant::now()).is_none());
        assert_eq!(tracer.settings(None)[1].1, Shown::One("1".into()));
    }
}
