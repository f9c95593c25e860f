//! The server's log subscriber and its run-time control, Triton's logging extension: which levels are logged
//! (`log_info`, `log_warning`, `log_error`), how much verbose (debug) output (`log_verbose_level`) and in which
//! format (`log_format`). A change applies to the running server at once: the level filter sits behind
//! `tracing_subscriber`'s reload handle, and one formatting layer per format is installed, each passing on
//! events only while its format is in force. Logs go to the console; `log_file` is reported as "" and cannot
//! be changed over the network (as in Triton).
//!
//! `RUST_LOG`, when set, stays the base of the filter (per-target directives included); the verbose level adds
//! debug output on top of it: 1 = inferd's debug lines, 2 = inferd's trace lines, 3 = every crate's debug
//! lines, 4 and above = every crate's trace lines.
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Mutex, OnceLock};

use tracing::level_filters::LevelFilter;
use tracing::{Level, Metadata, Subscriber};
use tracing_subscriber::filter::{filter_fn, FilterFn};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::time::FormatTime;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::{Context, Layer, SubscriberExt};
use tracing_subscriber::registry::{LookupSpan, Registry};
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{reload, EnvFilter};

use crate::cli::LogFormat;
use crate::error::InferError;

/// A setting's value as a request carries it (JSON or the gRPC oneof), before it is checked.
#[derive(Clone, Debug, PartialEq)]
pub enum SettingValue {
    Bool(bool),
    Uint(u32),
    String(String),
    /// Any other JSON value (a negative or fractional number, an array, an object), named for the error.
    Other(&'static str),
}

/// The log settings in force.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogSettings {
    pub info: bool,
    pub warning: bool,
    pub error: bool,
    pub verbose_level: u32,
    pub format: LogFormat,
}

impl LogSettings {
    fn new(format: LogFormat) -> Self {
        Self {
            info: true,
            warning: true,
            error: true,
            verbose_level: 0,
            format,
        }
    }

    /// Every setting with its value, under Triton's names, in Triton's order.
    pub fn entries(&self) -> Vec<(&'static str, SettingValue)> {
        vec![
            ("log_file", SettingValue::String(String::new())),
            ("log_info", SettingValue::Bool(self.info)),
            ("log_warning", SettingValue::Bool(self.warning)),
            ("log_error", SettingValue::Bool(self.error)),
            ("log_verbose_level", SettingValue::Uint(self.verbose_level)),
            ("log_format", SettingValue::String(format_name(self.format).to_string())),
        ]
    }

    /// The settings as the REST API answers them.
    pub fn to_json(&self) -> serde_json::Value {
        let map = self
            .entries()
            .into_iter()
            .map(|(k, v)| {
                let v = match v {
                    SettingValue::Bool(b) => serde_json::Value::from(b),
                    SettingValue::Uint(n) => serde_json::Value::from(n),
                    SettingValue::String(s) => serde_json::Value::from(s),
                    SettingValue::Other(_) => serde_json::Value::Null,
                };
                (k.to_string(), v)
            })
            .collect();
        serde_json::Value::Object(map)
    }
}

const SETTINGS: &str = "log_file, log_info, log_warning, log_error, log_verbose_level, log_format";

fn format_name(format: LogFormat) -> &'static str {
    match format {
        LogFormat::Text => "default",
        LogFormat::Iso8601 => "ISO8601",
        LogFormat::Json => "JSON",
    }
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum LogSettingsError {
    #[error("unknown log setting '{0}' (settings: {SETTINGS})")]
    Unknown(String),
    #[error("expect boolean for '{0}'")]
    ExpectBool(&'static str),
    #[error("expect int32 for '{0}' (an integer from 0 to 4294967295)")]
    ExpectUint(&'static str),
    #[error("expect string for '{0}'")]
    ExpectString(&'static str),
    #[error("invalid argument for log_format, got: {0} (formats: default, ISO8601, JSON)")]
    Format(String),
    #[error("log file location can not be updated through network protocol (this server logs to the console)")]
    LogFile,
    #[error("the log settings must be a JSON object of setting names and values")]
    NotAnObject,
    #[error("the server does not support dynamic logging (its log subscriber is not inferd's own)")]
    NotInstalled,
}

impl From<LogSettingsError> for InferError {
    fn from(e: LogSettingsError) -> Self {
        match e {
            LogSettingsError::NotInstalled => InferError::Unavailable(e.to_string()),
            _ => InferError::invalid(e.to_string()),
        }
    }
}

/// A checked change: only the settings a request names.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct LogUpdate {
    info: Option<bool>,
    warning: Option<bool>,
    error: Option<bool>,
    verbose_level: Option<u32>,
    format: Option<LogFormat>,
}

impl LogUpdate {
    /// Checks every named setting before any is applied, so a bad request changes nothing.
    pub fn parse(settings: impl IntoIterator<Item = (String, SettingValue)>) -> Result<Self, LogSettingsError> {
        let mut update = Self::default();
        for (name, value) in settings {
            match name.as_str() {
                // Logs go to the console; naming where they already go is no change.
                "log_file" => match value {
                    SettingValue::String(s) if s.is_empty() => {}
                    SettingValue::String(_) => return Err(LogSettingsError::LogFile),
                    _ => return Err(LogSettingsError::ExpectString("log_file")),
                },
                "log_info" => update.info = Some(boolean("log_info", value)?),
                "log_warning" => update.warning = Some(boolean("log_warning", value)?),
                "log_error" => update.error = Some(boolean("log_error", value)?),
                "log_verbose_level" => match value {
                    SettingValue::Uint(n) => update.verbose_level = Some(n),
                    _ => return Err(LogSettingsError::ExpectUint("log_verbose_level")),
                },
                "log_format" => match value {
                    SettingValue::String(s) => {
                        update.format = Some(match s.as_str() {
                            "default" => LogFormat::Text,
                            "ISO8601" => LogFormat::Iso8601,
                            "JSON" => LogFormat::Json,
                            _ => return Err(LogSettingsError::Format(crate::model_name::shown(&s, 64))),
                        })
                    }
                    _ => return Err(LogSettingsError::ExpectString("log_format")),
                },
                _ => return Err(LogSettingsError::Unknown(crate::model_name::shown(&name, 64))),
            }
        }
        Ok(update)
    }

    /// A REST body: a JSON object of settings (`null` values are skipped, as Triton does).
    pub fn from_json(body: &serde_json::Value) -> Result<Self, LogSettingsError> {
        let serde_json::Value::Object(map) = body else {
            return Err(LogSettingsError::NotAnObject);
        };
        Self::parse(map.iter().filter(|(_, v)| !v.is_null()).map(|(k, v)| {
            let value = match v {
                serde_json::Value::Bool(b) => SettingValue::Bool(*b),
                serde_json::Value::String(s) => SettingValue::String(s.clone()),
                serde_json::Value::Number(n) => match n.as_u64().and_then(|n| u32::try_from(n).ok()) {
                    Some(n) => SettingValue::Uint(n),
                    None => SettingValue::Other("number out of range"),
                },
                serde_json::Value::Array(_) => SettingValue::Other("array"),
                serde_json::Value::Object(_) => SettingValue::Other("object"),
                serde_json::Value::Null => SettingValue::Other("null"),
            };
            (k.clone(), value)
        }))
    }

    fn apply(&self, to: &mut LogSettings) {
        to.info = self.info.unwrap_or(to.info);
        to.warning = self.warning.unwrap_or(to.warning);
        to.error = self.error.unwrap_or(to.error);
        to.verbose_level = self.verbose_level.unwrap_or(to.verbose_level);
        to.format = self.format.unwrap_or(to.format);
    }
}

fn boolean(name: &'static str, value: SettingValue) -> Result<bool, LogSettingsError> {
    match value {
        SettingValue::Bool(b) => Ok(b),
        _ => Err(LogSettingsError::ExpectBool(name)),
    }
}

/// The filter: `RUST_LOG` (or "info") plus the verbose level's additions, gated by the per-level switches.
/// Levels switched off are never of interest, so their events cost nothing, as with a static filter.
struct LevelGate {
    env: EnvFilter,
    info: bool,
    warning: bool,
    error: bool,
}

impl LevelGate {
    fn new(base: &str, settings: &LogSettings) -> Self {
        let mut directives = base.to_string();
        // Later, more specific directives win over the base for inferd's own target.
        for (min, extra) in [(1, "inferd=debug"), (2, "inferd=trace"), (3, "debug"), (4, "trace")] {
            if settings.verbose_level >= min {
                directives.push(',');
                directives.push_str(extra);
            }
        }
        Self {
            env: EnvFilter::builder().parse_lossy(directives),
            info: settings.info,
            warning: settings.warning,
            error: settings.error,
        }
    }

    fn allows(&self, level: &Level) -> bool {
        match *level {
            Level::ERROR => self.error,
            Level::WARN => self.warning,
            Level::INFO => self.info,
            // Debug and trace lines are the verbose ones, which the env filter's directives govern.
            _ => true,
        }
    }
}

impl<S: Subscriber + for<'a> LookupSpan<'a>> Layer<S> for LevelGate {
    fn register_callsite(&self, metadata: &'static Metadata<'static>) -> tracing::subscriber::Interest {
        if self.allows(metadata.level()) {
            <EnvFilter as Layer<S>>::register_callsite(&self.env, metadata)
        } else {
            tracing::subscriber::Interest::never()
        }
    }

    fn enabled(&self, metadata: &Metadata<'_>, ctx: Context<'_, S>) -> bool {
        self.allows(metadata.level()) && <EnvFilter as Layer<S>>::enabled(&self.env, metadata, ctx)
    }

    fn max_level_hint(&self) -> Option<LevelFilter> {
        <EnvFilter as Layer<S>>::max_level_hint(&self.env)
    }

    fn on_new_span(&self, attrs: &tracing::span::Attributes<'_>, id: &tracing::span::Id, ctx: Context<'_, S>) {
        self.env.on_new_span(attrs, id, ctx)
    }

    fn on_record(&self, id: &tracing::span::Id, values: &tracing::span::Record<'_>, ctx: Context<'_, S>) {
        self.env.on_record(id, values, ctx)
    }

    fn on_enter(&self, id: &tracing::span::Id, ctx: Context<'_, S>) {
        self.env.on_enter(id, ctx)
    }

    fn on_exit(&self, id: &tracing::span::Id, ctx: Context<'_, S>) {
        self.env.on_exit(id, ctx)
    }

    fn on_close(&self, id: tracing::span::Id, ctx: Context<'_, S>) {
        self.env.on_close(id, ctx)
    }
}

/// UTC to the second, as Triton's ISO8601 format writes it: `2024-05-01T12:34:56Z`.
struct Iso8601Seconds;

impl FormatTime for Iso8601Seconds {
    fn format_time(&self, w: &mut Writer<'_>) -> std::fmt::Result {
        write!(w, "{}", humantime::format_rfc3339_seconds(std::time::SystemTime::now()))
    }
}

/// The format in force, as the formatting layers' filters read it.
static FORMAT: AtomicU8 = AtomicU8::new(0);

fn format_code(format: LogFormat) -> u8 {
    match format {
        LogFormat::Text => 0,
        LogFormat::Iso8601 => 1,
        LogFormat::Json => 2,
    }
}

/// Events go to the layer of the format in force only. Every layer sees every span, so a span opened before
/// a switch carries each format's own record of its fields (the JSON layer needs its own to write one).
fn format_filter(format: LogFormat) -> FilterFn<impl Fn(&Metadata<'_>) -> bool> {
    let code = format_code(format);
    filter_fn(move |metadata| metadata.is_span() || FORMAT.load(Ordering::Relaxed) == code)
}

/// The handle that changes the installed subscriber's filter, and the settings it now runs with.
pub struct LogControl {
    base: String,
    settings: Mutex<LogSettings>,
    filter: reload::Handle<LevelGate, Registry>,
}

static CONTROL: OnceLock<LogControl> = OnceLock::new();

impl LogControl {
    pub fn settings(&self) -> LogSettings {
        self.settings.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Applies `update` to the running subscriber and returns the settings now in force.
    pub fn update(&self, update: &LogUpdate) -> LogSettings {
        // The lock orders concurrent changes; it is held for no await, only for the filter's swap.
        let mut settings = self.settings.lock().unwrap_or_else(|p| p.into_inner());
        update.apply(&mut settings);
        FORMAT.store(format_code(settings.format), Ordering::Relaxed);
        // Swapping the filter also has every callsite asked again, which the format filters' cached answers
        // need after a format change. It fails only when the subscriber is gone: nothing is left to change.
        let _ = self.filter.reload(LevelGate::new(&self.base, &settings));
        settings.clone()
    }
}

/// The control of the subscriber `init` installed, if this process runs inferd's own.
pub fn control() -> Result<&'static LogControl, LogSettingsError> {
    CONTROL.get().ok_or(LogSettingsError::NotInstalled)
}

/// Installs the server's subscriber on the console (stdout; colour only for a person at a terminal).
pub fn init(format: LogFormat) -> anyhow::Result<()> {
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stdout());
    init_with_writer(format, std::io::stdout, ansi)
}

/// Installs the server's subscriber writing to `writer` (tests capture what is logged this way). Fails if a
/// global subscriber is already set.
pub fn init_with_writer<W>(format: LogFormat, writer: W, ansi: bool) -> anyhow::Result<()>
where
    W: for<'w> MakeWriter<'w> + Clone + Send + Sync + 'static,
{
    let base = std::env::var("RUST_LOG")
        .ok()
        .filter(|s| !s.trim().is_empty())
        .unwrap_or_else(|| "info".into());
    let settings = LogSettings::new(format);
    FORMAT.store(format_code(format), Ordering::Relaxed);
    let (filter, filter_handle) = reload::Layer::new(LevelGate::new(&base, &settings));
    // Each layer sits on a different subscriber type, so each is built where it is added.
    let text = tracing_subscriber::fmt::layer()
        .with_target(false)
        .with_ansi(ansi)
        .with_writer(writer.clone());
    let iso = tracing_subscriber::fmt::layer()
        .with_target(false)
        .with_ansi(ansi)
        .with_timer(Iso8601Seconds)
        .with_writer(writer.clone());
    let json = tracing_subscriber::fmt::layer()
        .with_target(false)
        .json()
        .with_writer(writer);
    tracing_subscriber::registry()
        .with(filter)
        .with(text.with_filter(format_filter(LogFormat::Text)))
        .with(iso.with_filter(format_filter(LogFormat::Iso8601)))
        .with(json.with_filter(format_filter(LogFormat::Json)))
        .try_init()?;
    let control = LogControl {
        base,
        settings: Mutex::new(settings),
        filter: filter_handle,
    };
    CONTROL
        .set(control)
        .map_err(|_| anyhow::anyhow!("the log subscriber is already installed"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &str) -> SettingValue {
        SettingValue::String(v.to_string())
    }

    #[test]
    fn an_update_names_only_the_settings_it_changes() {
        let u = LogUpdate::parse([("log_verbose_level".to_string(), SettingValue::Uint(2))]).unwrap();
        let mut settings = LogSettings::new(LogFormat::Text);
        u.apply(&mut settings);
        assert_eq!(settings.verbose_level, 2);
        assert!(settings.info && settings.warning && settings.error);
        assert_eq!(settings.format, LogFormat::Text);
    }

    #[test]
    fn wrong_types_and_unknown_names_are_refused_with_tritons_wording() {
        let one = |k: &str, v: SettingValue| LogUpdate::parse([(k.to_string(), v)]).unwrap_err().to_string();
        assert_eq!(one("log_info", s("true")), "expect boolean for 'log_info'");
        assert!(one("log_verbose_level", SettingValue::Bool(true)).starts_with("expect int32 for 'log_verbose_level'"));
        assert_eq!(
            one("log_format", SettingValue::Uint(1)),
            "expect string for 'log_format'"
        );
        assert!(one("log_format", s("xml")).starts_with("invalid argument for log_format, got: xml"));
        assert!(one("log_file", s("/tmp/x.log")).starts_with("log file location can not be updated"));
        assert!(one("log_level", SettingValue::Uint(1)).starts_with("unknown log setting 'log_level'"));
        // Naming the console, where logs already go, is no change.
        assert_eq!(
            LogUpdate::parse([("log_file".to_string(), s(""))]),
            Ok(LogUpdate::default())
        );
    }

    #[test]
    fn a_rest_body_maps_json_types_and_skips_nulls() {
        let u =
            LogUpdate::from_json(&serde_json::json!({"log_info": false, "log_verbose_level": 3, "log_error": null}))
                .unwrap();
        assert_eq!((u.info, u.verbose_level, u.error), (Some(false), Some(3), None));
        for bad in [
            serde_json::json!({"log_verbose_level": -1}),
            serde_json::json!({"log_verbose_level": 1.5}),
        ] {
            assert!(LogUpdate::from_json(&bad).is_err(), "{bad}");
        }
        assert_eq!(
            LogUpdate::from_json(&serde_json::json!([1])),
            Err(LogSettingsError::NotAnObject)
        );
    }

    #[test]
    fn the_rest_answer_has_every_setting_under_tritons_names() {
        let json = LogSettings::new(LogFormat::Iso8601).to_json();
        assert_eq!(
            json,
            serde_json::json!({"log_file": "", "log_info": true, "log_warning": true, "log_error": true,
                "log_verbose_level": 0, "log_format": "ISO8601"})
        );
    }

    #[test]
    fn switched_off_levels_are_filtered_out_and_verbose_levels_add_debug() {
        let mut settings = LogSettings::new(LogFormat::Text);
        settings.info = false;
        let gate = LevelGate::new("info", &settings);
        assert!(!gate.allows(&Level::INFO) && gate.allows(&Level::WARN) && gate.allows(&Level::ERROR));
        assert_eq!(
            <EnvFilter as Layer<Registry>>::max_level_hint(&gate.env),
            Some(LevelFilter::INFO)
        );
        settings.verbose_level = 1;
        let gate = LevelGate::new("info", &settings);
        assert_eq!(
            <EnvFilter as Layer<Registry>>::max_level_hint(&gate.env),
            Some(LevelFilter::DEBUG)
        );
    }
}
