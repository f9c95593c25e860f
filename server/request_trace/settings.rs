//! Triton's trace settings (the trace extension): the server-wide values, each model's overrides, the changes a
//! client asks for, and which requests are sampled. Pure: no clock, no I/O, so every rule is unit-tested here.
//!
//! As Triton: a model's settings are the global ones except where the model overrides them; a `null` clears an
//! override (or, globally, goes back to the command line's value); a model update with no settings at all
//! drops the model's overrides. `trace_rate` N traces the N-th, 2N-th, ... request of a scope (0: none but
//! those whose caller sent a trace context); `trace_count` is how many traces are left (-1: no limit).
use std::collections::HashMap;

use crate::error::{InferError, InferResult};

/// The keys a client may update, in Triton's spelling.
const UPDATABLE: &str = "trace_level, trace_rate, trace_count, log_frequency";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Level {
    Off,
    Timestamps,
}

impl Level {
    /// Triton's level list: `["OFF"]` alone, or `TIMESTAMPS` (`TENSORS` is not traced in OpenTelemetry mode,
    /// as in Triton's).
    pub fn parse(values: &[String]) -> InferResult<Self> {
        if values.is_empty() {
            return Err(InferError::invalid("trace_level needs at least one level"));
        }
        let mut level = None;
        for v in values {
            match v.as_str() {
                "OFF" if values.len() == 1 => level = Some(Level::Off),
                "OFF" => return Err(InferError::invalid("Expect only one trace level 'OFF' is specified")),
                "TIMESTAMPS" => level = Some(Level::Timestamps),
                "TENSORS" => {
                    return Err(InferError::invalid(
                        "trace level 'TENSORS' is not supported in opentelemetry trace mode",
                    ))
                }
                other => {
                    return Err(InferError::invalid(format!(
                        "unknown trace level '{other}': expected 'OFF' or 'TIMESTAMPS'"
                    )))
                }
            }
        }
        level.ok_or_else(|| InferError::invalid("trace_level needs at least one level"))
    }

    pub fn name(self) -> &'static str {
        match self {
            Level::Off => "OFF",
            Level::Timestamps => "TIMESTAMPS",
        }
    }
}

/// One scope's settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Values {
    pub level: Level,
    pub rate: u32,
    /// Traces left; -1: no limit.
    pub count: i32,
    /// Triton's file-writing frequency: kept and checked, though no file is written in OpenTelemetry mode.
    pub log_frequency: u32,
}

impl Default for Values {
    /// Triton's defaults.
    fn default() -> Self {
        Self {
            level: Level::Off,
            rate: 1000,
            count: -1,
            log_frequency: 0,
        }
    }
}

/// A model's overrides of the global values.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Overrides {
    level: Option<Level>,
    rate: Option<u32>,
    count: Option<i32>,
    log_frequency: Option<u32>,
}

/// What an update does to one setting.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Change<T> {
    Keep,
    /// `null` (REST) or an empty value list (gRPC).
    Clear,
    Set(T),
}

impl<T: Copy> Change<T> {
    fn apply_override(self, slot: &mut Option<T>) {
        match self {
            Change::Keep => {}
            Change::Clear => *slot = None,
            Change::Set(v) => *slot = Some(v),
        }
    }

    fn apply_global(self, slot: &mut T, initial: T) {
        match self {
            Change::Keep => {}
            Change::Clear => *slot = initial,
            Change::Set(v) => *slot = v,
        }
    }
}

/// A checked update request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Update {
    pub level: Change<Level>,
    pub rate: Change<u32>,
    pub count: Change<i32>,
    pub log_frequency: Change<u32>,
    /// The request named no setting at all.
    pub empty: bool,
}

fn one<'a>(key: &str, values: &'a [String]) -> InferResult<&'a str> {
    match values {
        [v] => Ok(v.as_str()),
        _ => Err(InferError::invalid(format!(
            "'{key}' takes one value, got {}",
            values.len()
        ))),
    }
}

fn unsigned(key: &str, values: &[String]) -> InferResult<u32> {
    let v = one(key, values)?;
    v.trim().parse::<u32>().map_err(|_| {
        InferError::invalid(format!(
            "Unable to parse '{key}', expecting an integer in [ 0, {} ], got: {v}",
            u32::MAX
        ))
    })
}

fn count(values: &[String]) -> InferResult<i32> {
    let v = one("trace_count", values)?;
    match v.trim().parse::<i32>() {
        Ok(c) if c >= -1 => Ok(c),
        _ => Err(InferError::invalid(format!(
            "Unable to parse 'trace_count'. Expecting value >= -1, got:{v}"
        ))),
    }
}

impl Update {
    /// Checks a request's settings: each key with its values, `None` to clear it. Unknown keys, settings that
    /// cannot change at run time, and bad values are refused as a whole: nothing is applied.
    pub fn parse<'a>(settings: impl IntoIterator<Item = (&'a str, Option<&'a [String]>)>) -> InferResult<Self> {
        let mut update = Update {
            level: Change::Keep,
            rate: Change::Keep,
            count: Change::Keep,
            log_frequency: Change::Keep,
            empty: true,
        };
        for (key, values) in settings {
            update.empty = false;
            match (key, values) {
                // Triton's wording and refusal.
                ("trace_file", _) => {
                    return Err(InferError::invalid(
                        "trace file location can not be updated through network protocol",
                    ))
                }
                ("trace_mode", Some(v)) if one(key, v)? == super::MODE => {}
                ("trace_mode", _) => {
                    return Err(InferError::invalid(format!(
                        "trace_mode can not be updated through network protocol (the server traces in '{}' mode)",
                        super::MODE
                    )))
                }
                ("url" | "resource" | "bsp_max_queue_size" | "bsp_schedule_delay" | "bsp_max_export_batch_size", _) => {
                    return Err(InferError::invalid(format!(
                        "OpenTelemetry setting '{key}' can only be set at start (--trace-config opentelemetry,{key}=...)"
                    )))
                }
                ("trace_level", None) => update.level = Change::Clear,
                ("trace_level", Some(v)) => update.level = Change::Set(Level::parse(v)?),
                ("trace_rate", None) => update.rate = Change::Clear,
                ("trace_rate", Some(v)) => update.rate = Change::Set(unsigned(key, v)?),
                ("trace_count", None) => update.count = Change::Clear,
                ("trace_count", Some(v)) => update.count = Change::Set(count(v)?),
                ("log_frequency", None) => update.log_frequency = Change::Clear,
                ("log_frequency", Some(v)) => update.log_frequency = Change::Set(unsigned(key, v)?),
                (other, _) => {
                    return Err(InferError::invalid(format!(
                        "unknown trace setting '{other}': expected one of {UPDATABLE}"
                    )))
                }
            }
        }
        Ok(update)
    }
}

/// A model with overrides samples on its own: its own request counter, and its own count when it sets one.
#[derive(Debug, Default)]
struct ModelScope {
    overrides: Overrides,
    seen: u64,
}

/// Every scope's settings and sampling state.
#[derive(Debug)]
pub struct Settings {
    /// From the command line: what a global `null` goes back to.
    initial: Values,
    global: Values,
    seen: u64,
    models: HashMap<String, ModelScope>,
}

/// Why a request is traced.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sampled {
    /// Its turn under `trace_rate` (and `trace_count` allowed it).
    Rate,
    /// Its caller sent a trace context: traced whatever the rate and count, as Triton does.
    Propagated,
}

impl Settings {
    pub fn new(initial: Values) -> Self {
        Self {
            initial,
            global: initial,
            seen: 0,
            models: HashMap::new(),
        }
    }

    /// The values in force for `model` (global ones when `None`).
    pub fn effective(&self, model: Option<&str>) -> Values {
        let g = self.global;
        match model.and_then(|m| self.models.get(m)) {
            None => g,
            Some(s) => Values {
                level: s.overrides.level.unwrap_or(g.level),
                rate: s.overrides.rate.unwrap_or(g.rate),
                count: s.overrides.count.unwrap_or(g.count),
                log_frequency: s.overrides.log_frequency.unwrap_or(g.log_frequency),
            },
        }
    }

    /// Whether any scope traces at all (the request path skips the lock when none does).
    pub fn any_on(&self) -> bool {
        self.global.level != Level::Off
            || self
                .models
                .values()
                .any(|s| s.overrides.level == Some(Level::Timestamps))
    }

    /// Applies a checked update to the global settings or to `model`'s. The scope's request counter starts
    /// again, as a fresh Triton setting does.
    pub fn apply(&mut self, model: Option<&str>, update: Update) {
        match model {
            None => {
                let init = self.initial;
                update.level.apply_global(&mut self.global.level, init.level);
                update.rate.apply_global(&mut self.global.rate, init.rate);
                update.count.apply_global(&mut self.global.count, init.count);
                update
                    .log_frequency
                    .apply_global(&mut self.global.log_frequency, init.log_frequency);
                self.seen = 0;
            }
            Some(m) if update.empty => {
                self.models.remove(m);
            }
            Some(m) => {
                let scope = self.models.entry(m.to_string()).or_default();
                let o = &mut scope.overrides;
                update.level.apply_override(&mut o.level);
                update.rate.apply_override(&mut o.rate);
                update.count.apply_override(&mut o.count);
                update.log_frequency.apply_override(&mut o.log_frequency);
                scope.seen = 0;
                if scope.overrides == Overrides::default() {
                    self.models.remove(m);
                }
            }
        }
    }

    /// Whether this request for `model` is traced, counting it against the scope's rate and count.
    pub fn sample(&mut self, model: &str, propagated: bool) -> Option<Sampled> {
        let values = self.effective(Some(model));
        if values.level == Level::Off {
            return None;
        }
        if propagated {
            return Some(Sampled::Propagated);
        }
        let scope = self.models.get_mut(model);
        let (seen, own_count) = match scope {
            Some(s) => (&mut s.seen, s.overrides.count.as_mut()),
            None => (&mut self.seen, None),
        };
        *seen = seen.wrapping_add(1);
        if values.rate == 0 || *seen % u64::from(values.rate) != 0 {
            return None;
        }
        // A model without a count of its own draws on the global one.
        let left = own_count.unwrap_or(&mut self.global.count);
        match *left {
            0 => None,
            n => {
                if n > 0 {
                    *left = n - 1;
                }
                Some(Sampled::Rate)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    fn update(pairs: &[(&str, Option<&[&str]>)]) -> InferResult<Update> {
        let owned: Vec<(String, Option<Vec<String>>)> =
            pairs.iter().map(|(k, v)| (k.to_string(), v.map(strings))).collect();
        Update::parse(owned.iter().map(|(k, v)| (k.as_str(), v.as_deref())))
    }

    fn timestamps(rate: u32, count: i32) -> Values {
        Values {
            level: Level::Timestamps,
            rate,
            count,
            log_frequency: 0,
        }
    }

    #[test]
    fn levels_are_off_alone_or_timestamps() {
        assert_eq!(Level::parse(&strings(&["OFF"])).unwrap(), Level::Off);
        assert_eq!(Level::parse(&strings(&["TIMESTAMPS"])).unwrap(), Level::Timestamps);
        for bad in [&["OFF", "TIMESTAMPS"][..], &["TENSORS"], &["LOUD"], &[]] {
            assert!(Level::parse(&strings(bad)).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn an_update_is_checked_whole_with_triton_wording() {
        let u = update(&[("trace_rate", Some(&["2"])), ("trace_level", None)]).unwrap();
        assert_eq!(u.rate, Change::Set(2));
        assert_eq!(u.level, Change::Clear);
        assert_eq!(u.count, Change::Keep);
        assert!(!u.empty);
        assert!(update(&[]).unwrap().empty);
        let err = |pairs: &[(&str, Option<&[&str]>)]| update(pairs).unwrap_err().to_string();
        assert_eq!(
            err(&[("trace_file", Some(&["/tmp/x"]))]),
            "trace file location can not be updated through network protocol"
        );
        assert!(err(&[("trace_rate", Some(&["-1"]))]).contains("Unable to parse 'trace_rate'"));
        assert!(err(&[("trace_rate", Some(&["ten"]))]).contains("got: ten"));
        assert!(err(&[("trace_count", Some(&["-2"]))]).contains("Expecting value >= -1"));
        assert!(err(&[("trace_rate", Some(&["1", "2"]))]).contains("one value"));
        assert!(err(&[("trace_levl", Some(&["OFF"]))]).contains("unknown trace setting 'trace_levl'"));
        assert!(err(&[("url", Some(&["http://x"]))]).contains("--trace-config"));
        assert!(err(&[("trace_mode", Some(&["triton"]))]).contains("can not be updated"));
        assert!(update(&[("trace_mode", Some(&["opentelemetry"]))]).is_ok());
    }

    #[test]
    fn a_model_overrides_the_global_settings_until_cleared() {
        let mut s = Settings::new(timestamps(1000, -1));
        s.apply(Some("m"), update(&[("trace_rate", Some(&["5"]))]).unwrap());
        assert_eq!(s.effective(Some("m")).rate, 5);
        assert_eq!(s.effective(Some("other")).rate, 1000);
        // A global change shows through where the model has no override of its own.
        s.apply(
            None,
            update(&[("trace_count", Some(&["7"])), ("trace_rate", Some(&["9"]))]).unwrap(),
        );
        assert_eq!(s.effective(Some("m")), timestamps(5, 7));
        s.apply(Some("m"), update(&[("trace_rate", None)]).unwrap());
        assert_eq!(s.effective(Some("m")).rate, 9);
        s.apply(Some("m"), update(&[("trace_level", Some(&["OFF"]))]).unwrap());
        assert_eq!(s.effective(Some("m")).level, Level::Off);
        // No settings at all: the model's overrides go.
        s.apply(Some("m"), update(&[]).unwrap());
        assert_eq!(s.effective(Some("m")), s.effective(None));
        // A global null goes back to the command line's value.
        s.apply(None, update(&[("trace_rate", None)]).unwrap());
        assert_eq!(s.effective(None).rate, 1000);
    }

    #[test]
    fn rate_traces_every_nth_request_and_count_stops_it() {
        let mut s = Settings::new(timestamps(2, -1));
        let traced: Vec<bool> = (0..6).map(|_| s.sample("m", false).is_some()).collect();
        assert_eq!(traced, [false, true, false, true, false, true]);
        s.apply(
            None,
            update(&[("trace_rate", Some(&["1"])), ("trace_count", Some(&["2"]))]).unwrap(),
        );
        let traced: Vec<bool> = (0..4).map(|_| s.sample("m", false).is_some()).collect();
        assert_eq!(traced, [true, true, false, false]);
        assert_eq!(s.effective(None).count, 0, "the count left is what the settings show");
        // A caller's trace context is traced whatever the rate and count.
        assert_eq!(s.sample("m", true), Some(Sampled::Propagated));
    }

    #[test]
    fn level_off_and_rate_zero_trace_nothing() {
        let mut s = Settings::new(Values::default());
        assert!(!s.any_on());
        assert!((0..2000).all(|_| s.sample("m", false).is_none()));
        assert_eq!(
            s.sample("m", true),
            None,
            "OFF exports nothing, not even a caller's trace"
        );
        s.apply(
            None,
            update(&[("trace_level", Some(&["TIMESTAMPS"])), ("trace_rate", Some(&["0"]))]).unwrap(),
        );
        assert!(s.any_on());
        assert!((0..100).all(|_| s.sample("m", false).is_none()));
    }

    #[test]
    fn a_model_samples_with_its_own_counter_and_count() {
        let mut s = Settings::new(Values {
            level: Level::Off,
            ..timestamps(1, -1)
        });
        s.apply(
            Some("m"),
            update(&[("trace_level", Some(&["TIMESTAMPS"])), ("trace_count", Some(&["1"]))]).unwrap(),
        );
        assert!(s.any_on());
        assert!(s.sample("other", false).is_none(), "the global level is OFF");
        assert!(s.sample("m", false).is_some());
        assert!(s.sample("m", false).is_none(), "its one trace is spent");
        assert_eq!(s.effective(Some("m")).count, 0);
        assert_eq!(s.effective(None).count, -1, "the global count is untouched");
    }
}
