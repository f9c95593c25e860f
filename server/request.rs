//! The transport-free request and response both front-ends decode into and encode from.
use crate::tensor::Tensor;

#[derive(Clone, Debug, PartialEq)]
pub enum ParamValue {
    Bool(bool),
    Int(i64),
    Uint(u64),
    Double(f64),
    String(String),
}

#[derive(Debug, Default)]
pub struct InferRequest {
    pub id: String,
    pub model: String,
    /// The version named in the URL or request; `None` picks the model's default.
    pub version: Option<String>,
    pub inputs: Vec<Tensor>,
    /// Requested output names; empty means every output.
    pub outputs: Vec<String>,
    pub parameters: Vec<(String, ParamValue)>,
}

impl InferRequest {
    pub fn parameter(&self, name: &str) -> Option<&ParamValue> {
        self.parameters.iter().find(|(k, _)| k == name).map(|(_, v)| v)
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
