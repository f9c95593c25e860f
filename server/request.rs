//! The transport-free request and response both front-ends decode into and encode from.
use crate::error::{InferError, InferResult};
use crate::model_name::ModelRef;
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
        Ok(Self { name, classification })
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
    /// Keeps a caller on one version of a weighted split (header or metadata `inferd-routing-key`, or the
    /// request parameter `routing_key`).
    pub routing_key: Option<String>,
    pub protocol: Protocol,
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
            routing_key: None,
            protocol,
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

#[derive(Debug)]
pub struct InferResponse {
    pub id: String,
    pub model_name: String,
    pub model_version: String,
    /// In the order requested (or the model's order when all were).
    pub outputs: Vec<Tensor>,
}
