//! How a stateful model's sequence batcher behaves, read once from `sequence_batching` exactly as Triton's
//! fields mean: the control inputs the server fills in per row (START, END, READY, CORRID), the strategy
//! (`direct`: a fixed slot per sequence; `oldest`: batches formed from the oldest candidate sequences), how
//! long an idle sequence keeps its slot, and the implicit state carried from one request of a sequence to its
//! next. A config the batcher cannot honour fails the load, naming the field.
use std::time::Duration;

use crate::proto::model_config::SchedulingChoice;
use crate::proto::model_sequence_batching::control::Kind;
use crate::proto::model_sequence_batching::initial_state::StateData;
use crate::proto::model_sequence_batching::{Control, StrategyChoice};
use crate::proto::{DataType as ConfigType, ModelConfig};
use crate::spec::ModelSpec;
use crate::tensor::DataType;

/// Triton's default for `max_sequence_idle_microseconds`: one second.
pub const DEFAULT_IDLE: Duration = Duration::from_secs(1);

/// A `sequence_batching` section the batcher cannot honour, naming the field at fault.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SequenceConfigError {
    #[error("sequence_batching.control_input '{input}': {reason}")]
    Control { input: String, reason: String },
    #[error("sequence_batching.control_input: more than one control input for {0}")]
    DuplicateControl(&'static str),
    #[error("sequence_batching.state '{state}': {reason}")]
    State { state: String, reason: String },
    #[error("sequence_batching.direct.minimum_slot_utilization must be between 0 and 1, got {0}")]
    SlotUtilization(String),
    #[error("sequence_batching.iterative_sequence is not supported")]
    Iterative,
    #[error("sequence_batching.oldest.max_candidate_sequences must not be negative, got {0}")]
    Candidates(i32),
    #[error("sequence_batching: tensor name '{0}' is used twice (control inputs, states and the config's inputs must have distinct names)")]
    NameClash(String),
}

/// What a control input signals.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ControlKind {
    Start,
    End,
    Ready,
    CorrId,
}

impl ControlKind {
    fn label(self) -> &'static str {
        match self {
            Self::Start => "CONTROL_SEQUENCE_START",
            Self::End => "CONTROL_SEQUENCE_END",
            Self::Ready => "CONTROL_SEQUENCE_READY",
            Self::CorrId => "CONTROL_SEQUENCE_CORRID",
        }
    }
}

/// A control tensor's value for false and for true, in its datatype's bytes.
#[derive(Clone, Debug, PartialEq)]
pub enum Flag {
    Int32([i32; 2]),
    Fp32([f32; 2]),
    Bool([bool; 2]),
}

impl Flag {
    pub fn datatype(&self) -> DataType {
        match self {
            Self::Int32(_) => DataType::Int32,
            Self::Fp32(_) => DataType::Fp32,
            Self::Bool(_) => DataType::Bool,
        }
    }

    /// Appends the value for `on` as little-endian bytes.
    pub fn push(&self, on: bool, out: &mut Vec<u8>) {
        let i = on as usize;
        match self {
            Self::Int32(v) => out.extend_from_slice(&v[i].to_le_bytes()),
            Self::Fp32(v) => out.extend_from_slice(&v[i].to_le_bytes()),
            Self::Bool(v) => out.push(v[i] as u8),
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub enum ControlValue {
    /// START, END or READY: a flag per row.
    Flag(Flag),
    /// CORRID: the row's correlation id in this datatype.
    CorrId(DataType),
}

#[derive(Clone, Debug, PartialEq)]
pub struct ControlInput {
    pub name: String,
    pub kind: ControlKind,
    pub value: ControlValue,
}

impl ControlInput {
    pub fn datatype(&self) -> DataType {
        match &self.value {
            ControlValue::Flag(f) => f.datatype(),
            ControlValue::CorrId(t) => *t,
        }
    }
}

/// An implicit state: the model's `output_name` after one request of a sequence is its `input_name` on the
/// next; zeros on a sequence's first request.
#[derive(Clone, Debug, PartialEq)]
pub struct StateSpec {
    pub input_name: String,
    pub output_name: String,
    pub datatype: DataType,
    /// Without the batch dimension; every one fixed.
    pub dims: Vec<i64>,
}

impl StateSpec {
    /// Bytes of one row of the state.
    pub fn row_bytes(&self) -> usize {
        let elements: i64 = self.dims.iter().product();
        elements.max(0) as usize * self.datatype.size().unwrap_or(0)
    }
}

#[derive(Clone, Debug, PartialEq)]
pub enum Strategy {
    /// Each sequence holds one batch slot of one instance from its start to its end. With a delay, a batch
    /// waits (at most `max_queue_delay` from its oldest request) until `minimum_slot_utilization` of the
    /// instance's slots have a request ready.
    Direct {
        max_queue_delay: Duration,
        minimum_slot_utilization: f32,
    },
    /// Each instance keeps up to `max_candidate_sequences` sequences and batches the oldest requests among
    /// them, dynamic-batching style.
    Oldest {
        max_candidate_sequences: usize,
        preferred_batch_sizes: Vec<usize>,
        max_queue_delay: Duration,
    },
}

#[derive(Clone, Debug, PartialEq)]
pub struct SequencePolicy {
    /// Rows per execution (1 for a model that does not batch).
    pub max_batch_size: usize,
    pub strategy: Strategy,
    /// A sequence with no request for this long loses its slot and state.
    pub max_idle: Duration,
    pub controls: Vec<ControlInput>,
    pub states: Vec<StateSpec>,
}

impl SequencePolicy {
    /// Sequences each instance can hold at once.
    pub fn slots_per_instance(&self) -> usize {
        match &self.strategy {
            Strategy::Direct { .. } => self.max_batch_size,
            Strategy::Oldest {
                max_candidate_sequences,
                ..
            } => *max_candidate_sequences,
        }
    }

    /// The sequence batcher's policy when the config has `sequence_batching`, else `None`.
    pub fn from_config(cfg: &ModelConfig, spec: &ModelSpec) -> Result<Option<Self>, SequenceConfigError> {
        let Some(SchedulingChoice::SequenceBatching(sb)) = &cfg.scheduling_choice else {
            return Ok(None);
        };
        let max_batch_size = spec.max_batch_size.max(1);
        if sb.iterative_sequence {
            return Err(SequenceConfigError::Iterative);
        }
        let strategy = match &sb.strategy_choice {
            None => Strategy::Direct {
                max_queue_delay: Duration::ZERO,
                minimum_slot_utilization: 0.0,
            },
            Some(StrategyChoice::Direct(d)) => {
                let utilization = d.minimum_slot_utilization;
                if !(0.0..=1.0).contains(&utilization) {
                    return Err(SequenceConfigError::SlotUtilization(utilization.to_string()));
                }
                Strategy::Direct {
                    max_queue_delay: Duration::from_micros(d.max_queue_delay_microseconds),
                    minimum_slot_utilization: utilization,
                }
            }
            Some(StrategyChoice::Oldest(o)) => {
                let candidates = usize::try_from(o.max_candidate_sequences)
                    .map_err(|_| SequenceConfigError::Candidates(o.max_candidate_sequences))?;
                let mut preferred: Vec<usize> = o
                    .preferred_batch_size
                    .iter()
                    .filter_map(|&p| usize::try_from(p).ok())
                    .filter(|&p| p > 0 && p <= max_batch_size)
                    .collect();
                preferred.sort_unstable();
                preferred.dedup();
                Strategy::Oldest {
                    // Triton's own default is one candidate per batch row.
                    max_candidate_sequences: if candidates == 0 { max_batch_size } else { candidates },
                    preferred_batch_sizes: preferred,
                    max_queue_delay: Duration::from_micros(o.max_queue_delay_microseconds),
                }
            }
        };
        let max_idle = match sb.max_sequence_idle_microseconds {
            0 => DEFAULT_IDLE,
            us => Duration::from_micros(us),
        };
        let mut controls: Vec<ControlInput> = Vec::new();
        for ci in &sb.control_input {
            let [control] = ci.control.as_slice() else {
                return Err(SequenceConfigError::Control {
                    input: ci.name.clone(),
                    reason: format!("must have exactly one control, has {}", ci.control.len()),
                });
            };
            let input = control_input(&ci.name, control)?;
            if controls.iter().any(|c| c.kind == input.kind) {
                return Err(SequenceConfigError::DuplicateControl(input.kind.label()));
            }
            controls.push(input);
        }
        let states = sb.state.iter().map(state).collect::<Result<Vec<_>, _>>()?;
        let mut names: Vec<&str> = spec.inputs.iter().map(|t| t.name.as_str()).collect();
        names.extend(controls.iter().map(|c| c.name.as_str()));
        names.extend(states.iter().map(|s| s.input_name.as_str()));
        let outputs: Vec<&str> = spec
            .outputs
            .iter()
            .map(|t| t.name.as_str())
            .chain(states.iter().map(|s| s.output_name.as_str()))
            .collect();
        for list in [&names, &outputs] {
            for (i, n) in list.iter().enumerate() {
                if list[..i].contains(n) {
                    return Err(SequenceConfigError::NameClash(n.to_string()));
                }
            }
        }
        Ok(Some(Self {
            max_batch_size,
            strategy,
            max_idle,
            controls,
            states,
        }))
    }
}

fn control_input(name: &str, c: &Control) -> Result<ControlInput, SequenceConfigError> {
    let fail = |reason: String| SequenceConfigError::Control {
        input: name.to_string(),
        reason,
    };
    if name.is_empty() {
        return Err(fail("the control input needs a name".into()));
    }
    let kind = match Kind::try_from(c.kind) {
        Ok(Kind::ControlSequenceStart) => ControlKind::Start,
        Ok(Kind::ControlSequenceEnd) => ControlKind::End,
        Ok(Kind::ControlSequenceReady) => ControlKind::Ready,
        Ok(Kind::ControlSequenceCorrid) => ControlKind::CorrId,
        Err(_) => return Err(fail(format!("unknown control kind {}", c.kind))),
    };
    if kind == ControlKind::CorrId {
        let datatype = ConfigType::try_from(c.data_type)
            .ok()
            .and_then(DataType::from_config)
            .filter(|t| {
                matches!(
                    t,
                    DataType::Uint64 | DataType::Int64 | DataType::Uint32 | DataType::Int32 | DataType::Bytes
                )
            })
            .ok_or_else(|| {
                fail("CONTROL_SEQUENCE_CORRID needs data_type TYPE_UINT64, TYPE_INT64, TYPE_UINT32, TYPE_INT32 or TYPE_STRING".into())
            })?;
        return Ok(ControlInput {
            name: name.to_string(),
            kind,
            value: ControlValue::CorrId(datatype),
        });
    }
    let given = [
        !c.int32_false_true.is_empty(),
        !c.fp32_false_true.is_empty(),
        !c.bool_false_true.is_empty(),
    ];
    if given.iter().filter(|&&g| g).count() != 1 {
        return Err(fail(format!(
            "{} needs exactly one of int32_false_true, fp32_false_true or bool_false_true",
            kind.label()
        )));
    }
    let pair = |field: &str, len: usize| fail(format!("{field} must hold two values (false, true), has {len}"));
    let flag = match (&c.int32_false_true[..], &c.fp32_false_true[..], &c.bool_false_true[..]) {
        (&[f, t], _, _) => Flag::Int32([f, t]),
        (_, &[f, t], _) => Flag::Fp32([f, t]),
        (_, _, &[f, t]) => Flag::Bool([f, t]),
        _ if given[0] => return Err(pair("int32_false_true", c.int32_false_true.len())),
        _ if given[1] => return Err(pair("fp32_false_true", c.fp32_false_true.len())),
        _ => return Err(pair("bool_false_true", c.bool_false_true.len())),
    };
    Ok(ControlInput {
        name: name.to_string(),
        kind,
        value: ControlValue::Flag(flag),
    })
}

fn state(s: &crate::proto::model_sequence_batching::State) -> Result<StateSpec, SequenceConfigError> {
    let fail = |reason: &str| SequenceConfigError::State {
        state: s.input_name.clone(),
        reason: reason.to_string(),
    };
    if s.input_name.is_empty() || s.output_name.is_empty() {
        return Err(fail("needs both input_name and output_name"));
    }
    let datatype = ConfigType::try_from(s.data_type)
        .ok()
        .and_then(DataType::from_config)
        .ok_or_else(|| fail("has no valid data_type"))?;
    if datatype == DataType::Bytes {
        return Err(fail("TYPE_STRING states are not supported; use a fixed-size data_type"));
    }
    if s.dims.is_empty() || s.dims.iter().any(|&d| d < 1) {
        return Err(fail(
            "dims must be given, each at least 1 (variable-size states are not supported)",
        ));
    }
    if s.use_growable_memory {
        return Err(fail("use_growable_memory is not supported"));
    }
    for init in &s.initial_state {
        match &init.state_data {
            Some(StateData::ZeroData(true)) => {}
            Some(StateData::DataFile(_)) => {
                return Err(fail("initial_state.data_file is not supported; use zero_data: true"))
            }
            _ => return Err(fail("initial_state needs zero_data: true")),
        }
        if init.data_type != s.data_type || init.dims != s.dims {
            return Err(fail("initial_state must have the state's data_type and dims"));
        }
    }
    Ok(StateSpec {
        input_name: s.input_name.clone(),
        output_name: s.output_name.clone(),
        datatype,
        dims: s.dims.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::repository::config::parse_pbtxt;

    fn policy(extra: &str) -> Result<Option<SequencePolicy>, SequenceConfigError> {
        let cfg = parse_pbtxt(&format!(
            "name: \"m\" max_batch_size: 8 input [{{ name: \"INPUT\" data_type: TYPE_INT32 dims: [1] }}] \
             output [{{ name: \"OUTPUT\" data_type: TYPE_INT32 dims: [1] }}] {extra}"
        ))
        .unwrap();
        SequencePolicy::from_config(&cfg, &ModelSpec::from_config(&cfg).unwrap())
    }

    #[test]
    fn reads_triton_control_inputs_and_defaults_to_direct_with_a_one_second_idle() {
        let p = policy(
            "sequence_batching { control_input [ \
             { name: \"START\" control [{ kind: CONTROL_SEQUENCE_START int32_false_true: [0, 1] }] }, \
             { name: \"READY\" control [{ kind: CONTROL_SEQUENCE_READY fp32_false_true: [0, 1] }] }, \
             { name: \"END\" control [{ kind: CONTROL_SEQUENCE_END bool_false_true: [false, true] }] }, \
             { name: \"CORRID\" control [{ kind: CONTROL_SEQUENCE_CORRID data_type: TYPE_UINT64 }] } ] }",
        )
        .unwrap()
        .unwrap();
        assert_eq!(
            p.strategy,
            Strategy::Direct {
                max_queue_delay: Duration::ZERO,
                minimum_slot_utilization: 0.0
            }
        );
        assert_eq!(p.max_idle, DEFAULT_IDLE);
        assert_eq!(p.slots_per_instance(), 8);
        assert_eq!(p.controls.len(), 4);
        assert_eq!(p.controls[0].value, ControlValue::Flag(Flag::Int32([0, 1])));
        assert_eq!(p.controls[1].value, ControlValue::Flag(Flag::Fp32([0.0, 1.0])));
        assert_eq!(p.controls[3].value, ControlValue::CorrId(DataType::Uint64));
    }

    #[test]
    fn reads_the_oldest_strategy_and_implicit_state() {
        let p = policy(
            "sequence_batching { max_sequence_idle_microseconds: 5000 \
             oldest { max_candidate_sequences: 4 preferred_batch_size: [2, 16] max_queue_delay_microseconds: 100 } \
             state [{ input_name: \"S_IN\" output_name: \"S_OUT\" data_type: TYPE_INT32 dims: [1] \
             initial_state: [{ data_type: TYPE_INT32 dims: [1] zero_data: true name: \"zeros\" }] }] }",
        )
        .unwrap()
        .unwrap();
        assert_eq!(
            p.strategy,
            Strategy::Oldest {
                max_candidate_sequences: 4,
                preferred_batch_sizes: vec![2],
                max_queue_delay: Duration::from_micros(100)
            }
        );
        assert_eq!(p.max_idle, Duration::from_millis(5));
        assert_eq!(p.states[0].row_bytes(), 4);
    }

    #[test]
    fn a_model_without_sequence_batching_has_no_sequence_policy() {
        assert_eq!(policy("").unwrap(), None);
    }

    #[test]
    fn inconsistent_sections_fail_naming_the_field() {
        let cases = [
            (
                "sequence_batching { control_input [{ name: \"S\" control [{ kind: CONTROL_SEQUENCE_START int32_false_true: [1] }] }] }",
                "int32_false_true must hold two values",
            ),
            (
                "sequence_batching { control_input [{ name: \"S\" control [{ kind: CONTROL_SEQUENCE_START }] }] }",
                "needs exactly one of int32_false_true",
            ),
            (
                "sequence_batching { control_input [{ name: \"C\" control [{ kind: CONTROL_SEQUENCE_CORRID data_type: TYPE_FP32 }] }] }",
                "CONTROL_SEQUENCE_CORRID needs data_type",
            ),
            (
                "sequence_batching { control_input [ \
                 { name: \"A\" control [{ kind: CONTROL_SEQUENCE_START int32_false_true: [0, 1] }] }, \
                 { name: \"B\" control [{ kind: CONTROL_SEQUENCE_START int32_false_true: [0, 1] }] } ] }",
                "more than one control input for CONTROL_SEQUENCE_START",
            ),
            (
                "sequence_batching { control_input [{ name: \"INPUT\" control [{ kind: CONTROL_SEQUENCE_READY int32_false_true: [0, 1] }] }] }",
                "tensor name 'INPUT' is used twice",
            ),
            (
                "sequence_batching { state [{ input_name: \"S\" output_name: \"T\" data_type: TYPE_INT32 dims: [-1] }] }",
                "sequence_batching.state 'S': dims must be given",
            ),
            (
                "sequence_batching { state [{ input_name: \"S\" output_name: \"T\" data_type: TYPE_INT32 dims: [1] \
                 initial_state [{ data_type: TYPE_INT32 dims: [1] data_file: \"f\" }] }] }",
                "initial_state.data_file is not supported",
            ),
            (
                "sequence_batching { direct { minimum_slot_utilization: 1.5 } }",
                "minimum_slot_utilization must be between 0 and 1, got 1.5",
            ),
            (
                "sequence_batching { iterative_sequence: true }",
                "iterative_sequence is not supported",
            ),
            (
                "sequence_batching { oldest { max_candidate_sequences: -1 } }",
                "max_candidate_sequences must not be negative",
            ),
        ];
        for (section, expected) in cases {
            let err = policy(section).unwrap_err().to_string();
            assert!(err.contains(expected), "{section}: {err}");
        }
    }
}
