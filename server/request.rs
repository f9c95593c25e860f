//! The transport-free request and response both front-ends decode into and encode from.
use crate::error::{InferError, InferResult};
use crate::model_name::ModelRef;
use crate::request_trace::TraceParent;
use crate::tensor::Tensor;

/// The header (REST) and metadata key (gRPC) of a request's routing key.
pub const ROUTING_KEY: &str = "inferd-routing-key";
/// The header (REST) and metadata key (gRPC) that gives a request its id for logs when the protocol's `id`
/// is empty (proxies such as Envoy and nginx set it).
pub const REQUEST_ID: &str = "x-request-id";

/// The front-end a request came through (a metrics label).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Protocol {
    #[default]
    Http,
    Grpc,
}

impl Protocol {
    pub const ALL: [Protocol; 2] = [Self::Http, Self::Grpc];

    pub fn label(self) -> &'static str {
        match self {
            Self::Http => "http",
            Self::Grpc => "grpc",
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub enum ParamValue {
    Bool(bool),
    Int(i64),
    Uint(u64),
    Double(f64),
    String(String),
}

impl ParamValue {
    /// A non-negative integer, else `None`.
    pub fn as_u64(&self) -> Option<u64> {
        match *self {
            Self::Int(i) => u64::try_from(i).ok(),
            Self::Uint(u) => Some(u),
            _ => None,
        }
    }
}

/// An output the request asks for, with what the protocol's parameters say about it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestedOutput {
    pub name: String,
    /// Triton's classification extension: the top this-many classes of each row in place of the tensor.
    pub classification: Option<usize>,
    /// Triton's shared memory extension: the output goes into this region rather than into the response.
    pub region: Option<RegionRef>,
}

impl RequestedOutput {
    /// An output with the protocol parameters the request gave it (`classification`: a class count, where 0
    /// asks for none; other parameters are the front-end's, such as `binary_data`).
    pub fn with_parameters(name: String, parameters: &[(String, ParamValue)]) -> InferResult<Self> {
        let classification = match parameters.iter().find(|(k, _)| k == "classification") {
            None => None,
            Some((_, v)) => match v.as_u64() {
                Some(0) => None,
                Some(k) => Some(usize::try_from(k).unwrap_or(usize::MAX)),
                None => {
                    return Err(InferError::invalid(format!(
                        "parameter 'classification' of output '{name}' must be a non-negative integer, got {v:?}"
                    )))
                }
            },
        };
        let region = RegionRef::from_parameters(&format!("output '{name}'"), parameters)?;
        Ok(Self {
            name,
            classification,
            region,
        })
    }
}

/// Where a tensor's bytes lie in a registered shared memory region (Triton's shared memory extension: the
/// `shared_memory_region`, `shared_memory_offset` and `shared_memory_byte_size` parameters of a tensor).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RegionRef {
    pub region: String,
    pub offset: usize,
    pub byte_size: usize,
}

impl RegionRef {
    /// The region a tensor's parameters name, if any: `shared_memory_region` (a string) and
    /// `shared_memory_byte_size` come together, `shared_memory_offset` defaults to 0; sizes are non-negative.
    pub fn from_parameters(tensor: &str, parameters: &[(String, ParamValue)]) -> InferResult<Option<Self>> {
        let get = |key: &str| parameters.iter().find(|(k, _)| k == key).map(|(_, v)| v);
        let size = |key: &str| -> InferResult<Option<usize>> {
            get(key)
                .map(|v| {
                    v.as_u64().and_then(|n| usize::try_from(n).ok()).ok_or_else(|| {
                        InferError::invalid(format!(
                            "parameter '{key}' of {tensor} must be a non-negative integer, got {v:?}"
                        ))
                    })
                })
                .transpose()
        };
        let region = match get("shared_memory_region") {
            None => None,
            Some(ParamValue::String(s)) => Some(s.clone()),
            Some(v) => {
                return Err(InferError::invalid(format!(
                    "parameter 'shared_memory_region' of {tensor} must be a string, got {v:?}"
                )))
            }
        };
        let byte_size = size("shared_memory_byte_size")?;
        let offset = size("shared_memory_offset")?;
        match (region, byte_size) {
            (Some(region), Some(byte_size)) => Ok(Some(Self {
                region,
                offset: offset.unwrap_or(0),
                byte_size,
            })),
            (None, None) if offset.is_none() => Ok(None),
            _ => Err(InferError::invalid(format!(
                "{tensor}: 'shared_memory_region' and 'shared_memory_byte_size' must be given together"
            ))),
        }
    }
}

#[derive(Clone, Debug)]
pub struct InferRequest {
    pub id: String,
    /// The model, and the version (or label) the request names; none picks by the model's traffic policy.
    pub model: ModelRef,
    pub inputs: Vec<Tensor>,
    /// The outputs asked for, in the order asked; empty means every output in the model's order.
    pub outputs: Vec<RequestedOutput>,
    pub parameters: Vec<(String, ParamValue)>,
    /// Inputs whose bytes are in shared memory (by index in `inputs`, whose `data` is empty until the regions
    /// are read, in `serving`).
    pub input_regions: Vec<(usize, RegionRef)>,
    /// Triton's sequence parameters (`sequence_id`, `sequence_start`, `sequence_end`), read from `parameters`
    /// by the decoder; `None` when the request belongs to no sequence.
    pub sequence: Option<SequenceRequest>,
    /// Keeps a caller on one version of a weighted split (header or metadata `inferd-routing-key`, or the
    /// request parameter `routing_key`).
    pub routing_key: Option<String>,
    pub protocol: Protocol,
    /// The caller's span (W3C `traceparent`), which this request's trace continues.
    pub trace_parent: Option<TraceParent>,
}

impl InferRequest {
    /// A request for `model` with nothing in it yet.
    pub fn new(model: ModelRef, protocol: Protocol) -> Self {
        Self {
            id: String::new(),
            model,
            inputs: Vec::new(),
            outputs: Vec::new(),
            parameters: Vec::new(),
            input_regions: Vec::new(),
            sequence: None,
            routing_key: None,
            protocol,
            trace_parent: None,
        }
    }

    pub fn parameter(&self, name: &str) -> Option<&ParamValue> {
        self.parameters.iter().find(|(k, _)| k == name).map(|(_, v)| v)
    }

    /// A request parameter that must be a non-negative integer when present (`priority`, `timeout`).
    pub fn unsigned_parameter(&self, name: &str) -> InferResult<Option<u64>> {
        match self.parameter(name) {
            None => Ok(None),
            Some(v) => v.as_u64().map(Some).ok_or_else(|| {
                InferError::invalid(format!("parameter '{name}' must be a non-negative integer, got {v:?}"))
            }),
        }
    }

    /// The transport's routing key, else the `routing_key` request parameter.
    pub fn routing_key(&self) -> Option<&str> {
        self.routing_key.as_deref().or(match self.parameter("routing_key") {
            Some(ParamValue::String(s)) => Some(s.as_str()),
            _ => None,
        })
    }
}

/// A sequence's correlation id: Triton's `sequence_id` parameter, a number or a string.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum SequenceId {
    Number(u64),
    Text(String),
}

impl SequenceId {
    /// The id as a number: a numeric id, or a string one that holds an unsigned integer.
    pub fn as_number(&self) -> Option<u64> {
        match self {
            Self::Number(n) => Some(*n),
            Self::Text(s) => s.parse().ok(),
        }
    }
}

impl std::fmt::Display for SequenceId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Number(n) => write!(f, "{n}"),
            Self::Text(s) => f.write_str(s),
        }
    }
}

/// Where a request stands in its sequence (Triton's sequence parameters).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SequenceRequest {
    pub id: SequenceId,
    pub start: bool,
    pub end: bool,
}

impl SequenceRequest {
    /// The sequence a request's parameters name: `sequence_id` 0 or "" (or none) means no sequence, as in
    /// Triton; `sequence_start` / `sequence_end` must be booleans.
    pub fn from_parameters(parameters: &[(String, ParamValue)]) -> InferResult<Option<Self>> {
        let get = |name: &str| parameters.iter().find(|(k, _)| k == name).map(|(_, v)| v);
        let flag = |name: &str| match get(name) {
            None => Ok(false),
            Some(ParamValue::Bool(b)) => Ok(*b),
            Some(v) => Err(InferError::invalid(format!(
                "parameter '{name}' must be a bool, got {v:?}"
            ))),
        };
        let id = match get("sequence_id") {
            None | Some(ParamValue::Int(0) | ParamValue::Uint(0)) => return Ok(None),
            Some(ParamValue::String(s)) if s.is_empty() => return Ok(None),
            Some(ParamValue::String(s)) => SequenceId::Text(s.clone()),
            Some(v) => SequenceId::Number(v.as_u64().ok_or_else(|| {
                InferError::invalid(format!(
                    "parameter 'sequence_id' must be a non-negative integer or a string, got {v:?}"
                ))
            })?),
        };
        Ok(Some(Self {
            id,
            start: flag("sequence_start")?,
            end: flag("sequence_end")?,
        }))
    }
}

#[derive(Debug)]
pub struct InferResponse {
    pub id: String,
    pub model_name: String,
    pub model_version: String,
    /// In the order requested (or the model's order when all were).
    pub outputs: Vec<Tensor>,
    /// Outputs written into shared memory (their tensors' `data` left empty): where, and how many bytes.
    pub in_regions: Vec<(String, RegionRef)>,
    /// A text model's tokens for this request, as the model read them.
    pub text_tokens: Option<crate::tokens::TextTokens>,
}

impl InferResponse {
    /// The shared memory region output `name` was written into, if it was.
    pub fn region_of(&self, name: &str) -> Option<&RegionRef> {
        self.in_regions.iter().find(|(n, _)| n == name).map(|(_, r)| r)
    }
}
