//! Validation at the door: per-input value rules declared in config.pbtxt `parameters`
//! (`validate.<INPUT>.min`, `.max`, `.allow_nan`; `validate.mode` = `reject` | `flag`), checked on every
//! request before it is queued. `reject` refuses the request naming the input, the feature, the value and the
//! rule; `flag` serves it, counting and logging the violation.
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use bytes::Bytes;

use super::features::numeric_values;
use crate::error::{InferError, InferResult};
use crate::proto::ModelConfig;
use crate::spec::ModelSpec;
use crate::tensor::DataType;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Reject,
    Flag,
}

/// The rules a value can break, as metrics label them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rule {
    Min,
    Max,
    Nan,
}

impl Rule {
    pub const ALL: [Rule; 3] = [Rule::Min, Rule::Max, Rule::Nan];

    pub fn label(self) -> &'static str {
        match self {
            Rule::Min => "min",
            Rule::Max => "max",
            Rule::Nan => "allow_nan",
        }
    }
}

#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum RulesError {
    #[error("parameter {key} must be {what}, got '{value}'")]
    Parameter {
        key: String,
        what: &'static str,
        value: String,
    },
    #[error("parameter {0} names no input of the model")]
    UnknownInput(String),
    #[error("parameter {key}: input '{input}' is {datatype}, and only numeric inputs have value rules")]
    NotNumeric {
        key: String,
        input: String,
        datatype: DataType,
    },
    #[error("unknown parameter {0} (validate.mode and validate.<INPUT>.min, .max, .allow_nan are known)")]
    Unknown(String),
    #[error("validate.{input}.min ({min}) is above validate.{input}.max ({max})")]
    Empty { input: String, min: f64, max: f64 },
}

/// One input's rules and the violations counted for it.
struct InputRule {
    /// Index among the spec's inputs.
    index: usize,
    name: String,
    datatype: DataType,
    min: Option<f64>,
    max: Option<f64>,
    allow_nan: bool,
    /// Per `Rule::ALL`.
    failures: [AtomicU64; 3],
}

pub struct InputRules {
    pub mode: Mode,
    rules: Vec<InputRule>,
}

/// The first value of a request that breaks a rule.
struct Violation<'a> {
    input: &'a InputRule,
    feature: usize,
    value: f64,
    rule: Rule,
}

impl InputRules {
    /// The rules a config declares; `None` when it declares none.
    pub fn from_config(cfg: &ModelConfig, spec: &ModelSpec) -> Result<Option<Self>, RulesError> {
        fn number(key: &str, value: &str) -> Result<f64, RulesError> {
            value
                .parse::<f64>()
                .ok()
                .filter(|v| !v.is_nan())
                .ok_or_else(|| RulesError::Parameter {
                    key: key.to_string(),
                    what: "a number",
                    value: value.to_string(),
                })
        }
        let mut mode = None;
        let mut rules: BTreeMap<usize, InputRule> = BTreeMap::new();
        for (key, param) in &cfg.parameters {
            let Some(rest) = key.strip_prefix("validate.") else {
                continue;
            };
            let value = param.string_value.trim();
            if rest == "mode" {
                mode = Some(match value {
                    "reject" => Mode::Reject,
                    "flag" => Mode::Flag,
                    _ => {
                        return Err(RulesError::Parameter {
                            key: key.clone(),
                            what: "reject or flag",
                            value: value.to_string(),
                        })
                    }
                });
                continue;
            }
            let Some((input, field)) = rest.rsplit_once('.') else {
                return Err(RulesError::Unknown(key.clone()));
            };
            let index = spec
                .inputs
                .iter()
                .position(|i| i.name == input)
                .ok_or_else(|| RulesError::UnknownInput(key.clone()))?;
            let declared = &spec.inputs[index];
            if declared.datatype == DataType::Bytes {
                return Err(RulesError::NotNumeric {
                    key: key.clone(),
                    input: input.to_string(),
                    datatype: declared.datatype,
                });
            }
            let rule = rules.entry(index).or_insert_with(|| InputRule {
                index,
                name: input.to_string(),
                datatype: declared.datatype,
                min: None,
                max: None,
                allow_nan: true,
                failures: Default::default(),
            });
            match field {
                "min" => rule.min = Some(number(key, value)?),
                "max" => rule.max = Some(number(key, value)?),
                "allow_nan" => {
                    rule.allow_nan = value.parse().map_err(|_| RulesError::Parameter {
                        key: key.clone(),
                        what: "true or false",
                        value: value.to_string(),
                    })?
                }
                _ => return Err(RulesError::Unknown(key.clone())),
            }
        }
        for r in rules.values() {
            if let (Some(min), Some(max)) = (r.min, r.max) {
                if min > max {
                    return Err(RulesError::Empty {
                        input: r.name.clone(),
                        min,
                        max,
                    });
                }
            }
        }
        if rules.is_empty() {
            return Ok(None);
        }
        Ok(Some(Self {
            mode: mode.unwrap_or(Mode::Reject),
            rules: rules.into_values().collect(),
        }))
    }

    /// Checks a request's inputs (in the spec's order), `rows` rows of them. In reject mode the first violation
    /// refuses it; in flag mode each input's first violation is counted and logged, and the request goes on.
    pub fn check(
        &self,
        inputs: &[Option<crate::tensor::Tensor>],
        rows: usize,
        model: &str,
        version: i64,
        request_id: &str,
    ) -> InferResult<()> {
        VALUES.with_borrow_mut(|values| {
            for rule in &self.rules {
                let Some(Some(t)) = inputs.get(rule.index) else { continue };
                let Some(v) = rule.first_violation(&t.data, rows, values) else { continue };
                match self.mode {
                    Mode::Reject => return Err(InferError::invalid(v.message(model))),
                    Mode::Flag => {
                        rule.failures[v.rule as usize].fetch_add(1, Relaxed);
                        tracing::warn!(request_id, model, version, input = %rule.name, rule = v.rule.label(), "input validation (flag mode): {}", v.message(model));
                    }
                }
            }
            Ok(())
        })
    }

    /// Violations counted in flag mode: (input, rule, count), for every rule an input declares.
    pub fn failures(&self) -> impl Iterator<Item = (&str, Rule, u64)> {
        self.rules.iter().flat_map(|r| {
            Rule::ALL
                .into_iter()
                .filter(|rule| match rule {
                    Rule::Min => r.min.is_some(),
                    Rule::Max => r.max.is_some(),
                    Rule::Nan => !r.allow_nan,
                })
                .map(|rule| (r.name.as_str(), rule, r.failures[rule as usize].load(Relaxed)))
        })
    }
}

thread_local! {
    /// The values of the input being checked, reused from request to request.
    static VALUES: std::cell::RefCell<Vec<f64>> = const { std::cell::RefCell::new(Vec::new()) };
}

impl InputRule {
    fn first_violation(&self, data: &Bytes, rows: usize, values: &mut Vec<f64>) -> Option<Violation<'_>> {
        numeric_values(self.datatype, data, values);
        let width = (values.len() / rows.max(1)).max(1);
        values.iter().enumerate().find_map(|(i, &value)| {
            let rule = if value.is_nan() {
                (!self.allow_nan).then_some(Rule::Nan)?
            } else if self.min.is_some_and(|min| value < min) {
                Rule::Min
            } else if self.max.is_some_and(|max| value > max) {
                Rule::Max
            } else {
                return None;
            };
            Some(Violation {
                input: self,
                feature: i % width,
                value,
                rule,
            })
        })
    }
}

impl Violation<'_> {
    fn message(&self, model: &str) -> String {
        let (input, feature, value) = (&self.input.name, self.feature, self.value);
        let rule = match self.rule {
            Rule::Min => format!("is below validate.{input}.min {}", self.input.min.unwrap_or_default()),
            Rule::Max => format!("is above validate.{input}.max {}", self.input.max.unwrap_or_default()),
            Rule::Nan => format!("is NaN, and validate.{input}.allow_nan is false"),
        };
        format!("input '{input}' of model '{model}': feature {feature} value {value} {rule}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tensor::Tensor;

    fn spec_and_config(params: &[(&str, &str)]) -> (ModelSpec, ModelConfig) {
        let mut text = String::from(
            r#"name: "m" max_batch_size: 8
               input [{ name: "INPUT" data_type: TYPE_FP32 dims: [ 4 ] }, { name: "TEXT" data_type: TYPE_STRING dims: [ 1 ] }]
               output [{ name: "OUTPUT" data_type: TYPE_FP32 dims: [ 4 ] }]"#,
        );
        for (k, v) in params {
            text.push_str(&format!(
                r#" parameters {{ key: "{k}" value {{ string_value: "{v}" }} }}"#
            ));
        }
        let cfg = crate::repository::config::parse_pbtxt(&text).expect("config");
        (ModelSpec::from_config(&cfg).expect("spec"), cfg)
    }

    fn rules(params: &[(&str, &str)]) -> Result<Option<InputRules>, RulesError> {
        let (spec, cfg) = spec_and_config(params);
        InputRules::from_config(&cfg, &spec)
    }

    fn input(values: &[f32]) -> Vec<Option<Tensor>> {
        vec![Some(Tensor {
            name: "INPUT".into(),
            datatype: DataType::Fp32,
            shape: vec![values.len() as i64 / 4, 4],
            data: values.iter().flat_map(|v| v.to_le_bytes()).collect::<Vec<u8>>().into(),
        })]
    }

    #[test]
    fn no_rules_means_nothing_to_check() {
        assert!(rules(&[("drift.window", "10")]).unwrap().is_none());
    }

    #[test]
    fn a_value_out_of_range_is_refused_naming_input_feature_value_and_rule() {
        let r = rules(&[("validate.INPUT.min", "-5"), ("validate.INPUT.max", "5")])
            .unwrap()
            .unwrap();
        assert_eq!(r.mode, Mode::Reject);
        assert!(r.check(&input(&[0.0; 8]), 2, "m", 1, "id").is_ok());
        let e = r
            .check(&input(&[0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 7.5, 0.0]), 2, "m", 1, "id")
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "input 'INPUT' of model 'm': feature 2 value 7.5 is above validate.INPUT.max 5"
        );
        let e = r.check(&input(&[-6.0, 0.0, 0.0, 0.0]), 1, "m", 1, "id").unwrap_err();
        assert!(
            e.to_string()
                .ends_with("feature 0 value -6 is below validate.INPUT.min -5"),
            "{e}"
        );
    }

    #[test]
    fn nan_is_allowed_unless_the_config_says_otherwise() {
        let nan = input(&[f32::NAN, 0.0, 0.0, 0.0]);
        let r = rules(&[("validate.INPUT.max", "5")]).unwrap().unwrap();
        assert!(r.check(&nan, 1, "m", 1, "id").is_ok());
        let r = rules(&[("validate.INPUT.allow_nan", "false")]).unwrap().unwrap();
        let e = r.check(&nan, 1, "m", 1, "id").unwrap_err();
        assert!(
            e.to_string().ends_with("is NaN, and validate.INPUT.allow_nan is false"),
            "{e}"
        );
    }

    #[test]
    fn flag_mode_serves_and_counts() {
        let r = rules(&[("validate.INPUT.max", "1"), ("validate.mode", "flag")])
            .unwrap()
            .unwrap();
        assert!(r.check(&input(&[2.0, 0.0, 0.0, 0.0]), 1, "m", 1, "id").is_ok());
        let counted: Vec<_> = r.failures().collect();
        assert_eq!(counted, vec![("INPUT", Rule::Max, 1)]);
    }

    #[test]
    fn bad_rules_are_load_errors() {
        assert!(matches!(
            rules(&[("validate.NOPE.min", "1")]),
            Err(RulesError::UnknownInput(_))
        ));
        assert!(matches!(
            rules(&[("validate.TEXT.min", "1")]),
            Err(RulesError::NotNumeric { .. })
        ));
        assert!(matches!(
            rules(&[("validate.INPUT.min", "x")]),
            Err(RulesError::Parameter { .. })
        ));
        assert!(matches!(
            rules(&[("validate.INPUT.median", "1")]),
            Err(RulesError::Unknown(_))
        ));
        assert!(matches!(
            rules(&[("validate.mode", "warn")]),
            Err(RulesError::Parameter { .. })
        ));
        assert!(matches!(
            rules(&[("validate.INPUT.min", "2"), ("validate.INPUT.max", "1")]),
            Err(RulesError::Empty { .. })
        ));
    }
}
