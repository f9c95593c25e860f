//! The transport-free request and response both front-ends decode into and encode from.
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

#[derive(Clone, Debug, Default)]
pub struct InferRequest {
    pub id: String,
    pub model: String,
    /// The version named in the URL or request; `None` picks the model's default.
    pub version: Option<String>,
    pub inputs: Vec<Tensor>,
    /// Requested output names; empty means every output.
    pub outputs: Vec<String>,
    pub parameters: Vec<(String, ParamValue)>,
    /// Keeps a caller on one version of a weighted split (header or metadata `inferd-routing-key`, or the
    /// request parameter `routing_key`).
    pub routing_key: Option<String>,
    pub protocol: Protocol,
}

impl InferRequest {
    pub fn parameter(&self, name: &str) -> Option<&ParamValue> {
        self.parameters.iter().find(|(k, _)| k == name).map(|(_, v)| v)
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
