//! A model's traffic policy: version labels (`stable`, `canary`) that clients may name instead of a number,
//! and a weighted split across versions for requests that name none. A request carrying a routing key
//! always lands on the same version for a given policy (sticky A/B arms); one without is spread by weight.
//!
//! Set in the model's config.pbtxt through `parameters` (so Triton's ModelConfig stays as it is):
//! `label.<name>` = version and `weight.<version>` = share, e.g. `weight.1: "90"`, `weight.2: "10"`; and
//! changed at run time through `PUT /v2/models/{m}/traffic`.
use std::collections::BTreeMap;
use std::hash::{DefaultHasher, Hash, Hasher};

use serde::{Deserialize, Serialize};

use crate::proto::ModelConfig;

/// A traffic policy that cannot apply: a parameter that does not parse, or a version that is not loaded.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum TrafficError {
    #[error("parameter {key} must be {what}, got '{value}'")]
    Parameter {
        key: String,
        what: &'static str,
        value: String,
    },
    #[error("unknown parameter {0}")]
    Unknown(String),
    #[error("parameter shadow.fraction needs shadow.version")]
    ShadowWithoutVersion,
    #[error("guard parameters need guard.version")]
    GuardWithoutVersion,
    #[error("the shadow fraction must be from 0 to 1, got {0}")]
    ShadowFraction(f64),
    #[error("the traffic policy names version {0}, which is not loaded")]
    NotLoaded(i64),
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrafficPolicy {
    /// Label -> version.
    #[serde(default)]
    pub labels: BTreeMap<String, i64>,
    /// Version -> share of the requests that name no version (any positive integers; they need not sum to 100).
    #[serde(default)]
    pub weights: BTreeMap<i64, u32>,
    /// A version that also receives a copy of a fraction of the requests; its answers are discarded (but
    /// measured in its statistics and metrics), and the caller never waits for it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shadow: Option<Shadow>,
    /// Automatic rollback: when the guarded version breaches a limit, its weight drops to 0 by itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub guard: Option<Guard>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Guard {
    /// The version watched (usually the canary).
    pub version: i64,
    /// Largest share of failed requests (0 to 1) over the window.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_error_rate: Option<f64>,
    /// Largest p99 request latency over the window, in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_p99_ms: Option<f64>,
    /// Largest divergence (Jensen–Shannon distance, 0 to 1) of the version's outputs from the stable arm's over
    /// their latest drift windows (both need a profile).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_divergence: Option<f64>,
    /// Requests the window must hold before it is judged.
    #[serde(default = "Guard::default_min_requests")]
    pub min_requests: u64,
    #[serde(default = "Guard::default_window_secs")]
    pub window_secs: u64,
}

impl Guard {
    fn default_min_requests() -> u64 {
        20
    }

    fn default_window_secs() -> u64 {
        30
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Shadow {
    pub version: i64,
    /// Share of requests copied, 0 to 1.
    pub fraction: f64,
}

impl TrafficPolicy {
    pub fn from_config(cfg: &ModelConfig) -> Result<Self, TrafficError> {
        fn parse<T: std::str::FromStr>(key: &str, value: &str, what: &'static str) -> Result<T, TrafficError> {
            value.parse().map_err(|_| TrafficError::Parameter {
                key: key.to_string(),
                what,
                value: value.to_string(),
            })
        }
        let mut policy = Self::default();
        let (mut shadow_version, mut shadow_fraction) = (None, None);
        let mut guard_version = None;
        let mut guard = Guard {
            version: 0,
            max_error_rate: None,
            max_p99_ms: None,
            max_divergence: None,
            min_requests: Guard::default_min_requests(),
            window_secs: Guard::default_window_secs(),
        };
        let mut guarded = false;
        for (key, param) in &cfg.parameters {
            let value = param.string_value.trim();
            if let Some(label) = key.strip_prefix("label.") {
                policy
                    .labels
                    .insert(label.to_string(), parse(key, value, "a version number")?);
            } else if let Some(version) = key.strip_prefix("weight.") {
                let v = parse(key, version, "weight.<version number>")?;
                policy.weights.insert(v, parse(key, value, "a non-negative integer")?);
            } else if key == "shadow.version" {
                shadow_version = Some(parse(key, value, "a version number")?);
            } else if key == "shadow.fraction" {
                shadow_fraction = Some(parse(key, value, "a number from 0 to 1")?);
            } else if let Some(field) = key.strip_prefix("guard.") {
                guarded = true;
                match field {
                    "version" => guard_version = Some(parse(key, value, "a version number")?),
                    "max_error_rate" => guard.max_error_rate = Some(parse(key, value, "a number from 0 to 1")?),
                    "max_p99_ms" => guard.max_p99_ms = Some(parse(key, value, "a number of milliseconds")?),
                    "max_divergence" => guard.max_divergence = Some(parse(key, value, "a number from 0 to 1")?),
                    "min_requests" => guard.min_requests = parse(key, value, "a number of requests")?,
                    "window_secs" => guard.window_secs = parse(key, value, "a number of seconds")?,
                    _ => return Err(TrafficError::Unknown(key.clone())),
                }
            }
        }
        policy.shadow = match (shadow_version, shadow_fraction) {
            (Some(version), fraction) => Some(Shadow {
                version,
                fraction: fraction.unwrap_or(0.0),
            }),
            (None, Some(_)) => return Err(TrafficError::ShadowWithoutVersion),
            (None, None) => None,
        };
        if guarded {
            guard.version = guard_version.ok_or(TrafficError::GuardWithoutVersion)?;
            policy.guard = Some(guard);
        }
        Ok(policy)
    }

    /// Every version the policy refers to must be loaded.
    pub fn check(&self, loaded: impl Fn(i64) -> bool) -> Result<(), TrafficError> {
        if let Some(sh) = &self.shadow {
            if !(0.0..=1.0).contains(&sh.fraction) {
                return Err(TrafficError::ShadowFraction(sh.fraction));
            }
        }
        let named = self
            .labels
            .values()
            .chain(self.weights.keys())
            .chain(self.shadow.as_ref().map(|s| &s.version));
        match named.copied().find(|v| !loaded(*v)) {
            Some(v) => Err(TrafficError::NotLoaded(v)),
            None => Ok(()),
        }
    }

    /// The version for a request that names none: by its routing key if it has one, else by `draw` (any
    /// well-spread number). `None` when the policy sets no weights.
    pub fn pick(&self, routing_key: Option<&str>, draw: u64) -> Option<i64> {
        let total: u64 = self.weights.values().map(|&w| u64::from(w)).sum();
        if total == 0 {
            return None;
        }
        let point = match routing_key {
            Some(key) => {
                let mut h = DefaultHasher::new();
                key.hash(&mut h);
                h.finish()
            }
            None => draw,
        } % total;
        let mut acc = 0;
        self.weights
            .iter()
            .find(|(_, &w)| {
                acc += u64::from(w);
                point < acc
            })
            .map(|(&v, _)| v)
    }
}

impl TrafficPolicy {
    /// The shadow version to copy this request to, if the draw falls within the shadow's fraction.
    pub fn shadow_for(&self, served: i64, draw: u64) -> Option<i64> {
        let sh = self.shadow.as_ref()?;
        let point = (draw >> 11) as f64 / (1u64 << 53) as f64;
        (sh.version != served && point < sh.fraction).then_some(sh.version)
    }
}

/// Spreads a counter over the u64 range (splitmix64), so consecutive requests draw independent points.
pub fn spread(counter: u64) -> u64 {
    let mut z = counter.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::repository::config::parse_pbtxt;

    #[test]
    fn reads_labels_and_weights_from_config_parameters() {
        let cfg = parse_pbtxt(
            r#"parameters { key: "label.stable" value { string_value: "1" } }
               parameters { key: "label.canary" value { string_value: "2" } }
               parameters { key: "weight.1" value { string_value: "90" } }
               parameters { key: "weight.2" value { string_value: "10" } }
               parameters { key: "intra_op_thread_count" value { string_value: "1" } }"#,
        )
        .unwrap();
        let p = TrafficPolicy::from_config(&cfg).unwrap();
        assert_eq!(p.labels["canary"], 2);
        assert_eq!(p.weights[&1], 90);
        assert!(p.check(|v| v == 1).is_err());
        assert!(p.check(|v| v == 1 || v == 2).is_ok());
    }

    #[test]
    fn reads_shadow_and_guard_parameters_and_refuses_them_without_a_version() {
        let cfg = parse_pbtxt(
            r#"parameters { key: "shadow.version" value { string_value: "2" } }
               parameters { key: "shadow.fraction" value { string_value: "0.1" } }
               parameters { key: "guard.version" value { string_value: "2" } }
               parameters { key: "guard.max_p99_ms" value { string_value: "50" } }"#,
        )
        .unwrap();
        let p = TrafficPolicy::from_config(&cfg).unwrap();
        assert_eq!(
            p.shadow,
            Some(Shadow {
                version: 2,
                fraction: 0.1
            })
        );
        let g = p.guard.unwrap();
        assert_eq!((g.version, g.max_p99_ms, g.min_requests), (2, Some(50.0), 20));
        let orphan = |key: &str| {
            let text = format!(r#"parameters {{ key: "{key}" value {{ string_value: "1" }} }}"#);
            TrafficPolicy::from_config(&parse_pbtxt(&text).unwrap())
                .unwrap_err()
                .to_string()
        };
        assert!(orphan("shadow.fraction").contains("shadow.version"));
        assert!(orphan("guard.min_requests").contains("guard.version"));
    }

    #[test]
    fn a_split_follows_its_weights_and_a_routing_key_sticks() {
        let p = TrafficPolicy {
            weights: BTreeMap::from([(1, 90), (2, 10)]),
            ..Default::default()
        };
        let canary = (0..10_000).filter(|&i| p.pick(None, spread(i)) == Some(2)).count();
        assert!((800..1200).contains(&canary), "about 10% to the canary, got {canary}");
        let arm = p.pick(Some("user-42"), 0);
        assert!((0..100).all(|i| p.pick(Some("user-42"), spread(i)) == arm));
        assert_eq!(TrafficPolicy::default().pick(None, 5), None);
    }
}
