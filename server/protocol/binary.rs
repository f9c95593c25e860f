//! The REST infer body: a JSON header optionally followed by Triton's binary tensor section
//! (`Inference-Header-Content-Length` gives the JSON's length; inputs with `binary_data_size` take their
//! bytes from the section in order). Responses are written the same way when binary outputs are asked for.
use bytes::{BufMut, Bytes, BytesMut};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::{Map, Value};

use super::json::{decode_data, parameter, parameters, JsonData};
use crate::error::{InferError, InferResult};
use crate::model_name::ModelRef;
use crate::request::{InferRequest, InferResponse, ParamValue, Protocol, RegionRef, RequestedOutput, SequenceRequest};
use crate::tensor::{DataType, Tensor};

pub const HEADER_LENGTH: &str = "inference-header-content-length";

#[derive(Deserialize)]
struct RequestJson<'a> {
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    parameters: Option<Map<String, Value>>,
    #[serde(borrow)]
    inputs: Vec<InputJson<'a>>,
    #[serde(default)]
    outputs: Vec<OutputJson>,
}

#[derive(Deserialize)]
struct InputJson<'a> {
    name: String,
    shape: Vec<i64>,
    datatype: String,
    #[serde(default)]
    parameters: Option<Map<String, Value>>,
    #[serde(default, borrow)]
    data: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct OutputJson {
    name: String,
    #[serde(default)]
    parameters: Option<Map<String, Value>>,
}

/// Which outputs go back as binary data: those the request named with their own `binary_data`, the rest by
/// the request's `binary_data_output`. Matched by name, whatever order the outputs come back in.
#[derive(Clone, Debug, Default)]
pub struct BinaryOutputs {
    pub default: bool,
    pub named: Vec<(String, bool)>,
}

impl BinaryOutputs {
    pub fn is_binary(&self, output: &str) -> bool {
        self.named
            .iter()
            .find(|(name, _)| name == output)
            .map_or(self.default, |&(_, binary)| binary)
    }
}

/// A decoded REST infer request, and how its outputs go back.
pub struct Decoded {
    pub request: InferRequest,
    pub binary: BinaryOutputs,
}

fn flag(params: Option<&Map<String, Value>>, key: &str) -> InferResult<Option<bool>> {
    match params.and_then(|p| p.get(key)) {
        None => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(other) => Err(InferError::invalid(format!(
            "parameter '{key}' must be a boolean, got {other}"
        ))),
    }
}

/// What Triton's shared memory parameters start with.
const SHARED_MEMORY_PREFIX: &str = "shared_memory_";

/// A tensor's shared memory parameters (the others are the decoder's own, such as `binary_data_size`).
fn shared_memory_parameters(params: Option<&Map<String, Value>>) -> InferResult<Vec<(String, ParamValue)>> {
    params
        .iter()
        .flat_map(|p| p.iter())
        .filter(|(k, _)| k.starts_with(SHARED_MEMORY_PREFIX))
        .map(|(k, v)| Ok((k.clone(), parameter(k, v)?)))
        .collect()
}

/// Decodes the body of an infer request for `model` (named by the URL).
pub fn decode_request(model: ModelRef, body: &Bytes, header_length: Option<usize>) -> InferResult<Decoded> {
    let json_len = header_length.unwrap_or(body.len());
    if json_len > body.len() {
        return Err(InferError::invalid(format!(
            "Inference-Header-Content-Length {json_len} is larger than the request body ({} bytes)",
            body.len()
        )));
    }
    let header = std::str::from_utf8(&body[..json_len])
        .map_err(|_| InferError::invalid("the JSON inference header is not valid UTF-8"))?;
    let req: RequestJson<'_> = serde_json::from_str(header)
        .map_err(|e| InferError::invalid(format!("failed to parse the request JSON: {e}")))?;
    let mut binary_at = json_len;
    let mut inputs = Vec::with_capacity(req.inputs.len());
    let mut input_regions = Vec::new();
    for input in &req.inputs {
        let datatype = DataType::from_name(&input.datatype).ok_or_else(|| {
            InferError::invalid(format!(
                "input '{}' has unknown datatype '{}'",
                input.name, input.datatype
            ))
        })?;
        let binary_size = match input.parameters.as_ref().and_then(|p| p.get("binary_data_size")) {
            None => None,
            Some(v) => Some(v.as_u64().ok_or_else(|| {
                InferError::invalid(format!(
                    "binary_data_size of input '{}' must be a non-negative integer",
                    input.name
                ))
            })? as usize),
        };
        let region = RegionRef::from_parameters(
            &format!("input '{}'", input.name),
            &shared_memory_parameters(input.parameters.as_ref())?,
        )?;
        let data = match (binary_size, input.data) {
            _ if region.is_some() => {
                if binary_size.is_some() || input.data.is_some() {
                    return Err(InferError::invalid(format!(
                        "input '{}' is in shared memory: it must carry neither 'data' nor 'binary_data_size'",
                        input.name
                    )));
                }
                Bytes::new()
            }
            (Some(size), _) => {
                let end = binary_at
                    .checked_add(size)
                    .filter(|&e| e <= body.len())
                    .ok_or_else(|| {
                        InferError::invalid(format!(
                            "input '{}' declares binary_data_size {size} but the binary section has only {} bytes left",
                            input.name,
                            body.len() - binary_at
                        ))
                    })?;
                let data = body.slice(binary_at..end);
                binary_at = end;
                data
            }
            (None, Some(raw)) => {
                let mut out = Vec::new();
                decode_data(raw.get(), datatype, &input.name, &mut out)?;
                Bytes::from(out)
            }
            (None, None) => {
                return Err(InferError::invalid(format!(
                    "input '{}' has neither 'data' nor 'binary_data_size'",
                    input.name
                )))
            }
        };
        if let Some(region) = region {
            input_regions.push((inputs.len(), region));
        }
        inputs.push(Tensor {
            name: input.name.clone(),
            datatype,
            shape: input.shape.clone(),
            data,
        });
    }
    if binary_at != body.len() {
        return Err(InferError::invalid(format!(
            "the request carries {} bytes of binary data that no input claims",
            body.len() - binary_at
        )));
    }
    let mut binary = BinaryOutputs {
        default: flag(req.parameters.as_ref(), "binary_data_output")?.unwrap_or(false),
        named: Vec::with_capacity(req.outputs.len()),
    };
    let mut outputs = Vec::with_capacity(req.outputs.len());
    for o in req.outputs {
        if let Some(b) = flag(o.parameters.as_ref(), "binary_data")? {
            binary.named.push((o.name.clone(), b));
        }
        // Of an output's parameters, the server acts on `classification`, the shared memory ones (and
        // `binary_data`, above).
        let params = o
            .parameters
            .iter()
            .flatten()
            .filter(|(k, _)| *k == "classification" || k.starts_with(SHARED_MEMORY_PREFIX))
            .map(|(k, v)| Ok((k.clone(), parameter(k, v)?)))
            .collect::<InferResult<Vec<_>>>()?;
        outputs.push(RequestedOutput::with_parameters(o.name, &params)?);
    }
    let mut request = InferRequest::new(model, Protocol::Http);
    request.id = req.id.unwrap_or_default();
    request.inputs = inputs;
    request.input_regions = input_regions;
    request.outputs = outputs;
    if let Some(p) = &req.parameters {
        request.parameters = parameters(p)?;
        request.sequence = SequenceRequest::from_parameters(&request.parameters)?;
    }
    Ok(Decoded { request, binary })
}

#[derive(Serialize)]
struct ResponseJson<'a> {
    model_name: &'a str,
    model_version: &'a str,
    #[serde(skip_serializing_if = "str::is_empty")]
    id: &'a str,
    outputs: Vec<OutputOut<'a>>,
}

#[derive(Serialize)]
struct BinarySize {
    binary_data_size: usize,
}

#[derive(Serialize)]
struct OutputOut<'a> {
    name: &'a str,
    datatype: &'static str,
    shape: &'a [i64],
    #[serde(skip_serializing_if = "Option::is_none")]
    parameters: Option<BinarySize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    data: Option<JsonData<'a>>,
}

/// Binary outputs at least this large go to the socket as the model produced them, beside the JSON header,
/// rather than copied behind it into one buffer.
const OWN_PIECE: usize = 64 * 1024;

/// A response body: one buffer, or the JSON header followed by large outputs' own bytes.
#[derive(Debug)]
pub struct ResponseBody {
    pieces: std::collections::VecDeque<Bytes>,
    len: u64,
}

impl ResponseBody {
    fn new(pieces: std::collections::VecDeque<Bytes>) -> Self {
        let len = pieces.iter().map(|p| p.len() as u64).sum();
        Self { pieces, len }
    }

    /// The whole body in one buffer (a copy when it is in pieces).
    pub fn to_bytes(&self) -> Bytes {
        match self.pieces.len() {
            0 => Bytes::new(),
            1 => self.pieces[0].clone(),
            _ => self.pieces.iter().flat_map(|p| p.iter().copied()).collect(),
        }
    }
}

impl http_body::Body for ResponseBody {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
        let piece = self.pieces.pop_front();
        if let Some(p) = &piece {
            self.len -= p.len() as u64;
        }
        std::task::Poll::Ready(piece.map(|p| Ok(http_body::Frame::data(p))))
    }

    fn is_end_stream(&self) -> bool {
        self.pieces.is_empty()
    }

    /// Exact, so that the response carries a Content-Length.
    fn size_hint(&self) -> http_body::SizeHint {
        http_body::SizeHint::with_exact(self.len)
    }
}

/// The response body, and the JSON header's length when a binary section follows.
pub fn encode_response(resp: &InferResponse, binary: &BinaryOutputs) -> (ResponseBody, Option<usize>) {
    // An output in shared memory carries neither data nor parameters, as in Triton: Triton's C++ client reads
    // `binary_data_size` from any output that has parameters.
    let in_region = |t: &Tensor| resp.region_of(&t.name).is_some();
    let is_binary = |t: &Tensor| binary.is_binary(&t.name) && !in_region(t);
    let outputs = resp
        .outputs
        .iter()
        .map(|t| OutputOut {
            name: &t.name,
            datatype: t.datatype.name(),
            shape: &t.shape,
            parameters: is_binary(t).then(|| BinarySize {
                binary_data_size: t.data.len(),
            }),
            data: (!is_binary(t) && !in_region(t)).then_some(JsonData(t)),
        })
        .collect();
    let json = ResponseJson {
        model_name: &resp.model_name,
        model_version: &resp.model_version,
        id: &resp.id,
        outputs,
    };
    let copied: usize = resp
        .outputs
        .iter()
        .filter(|t| is_binary(t) && t.data.len() < OWN_PIECE)
        .map(|t| t.data.len())
        .sum();
    let mut body = BytesMut::with_capacity(256 + copied).writer();
    // Serializing our own structs into memory cannot fail.
    let _ = serde_json::to_writer(&mut body, &json);
    let mut body = body.into_inner();
    let json_len = body.len();
    if !resp.outputs.iter().any(is_binary) {
        return (ResponseBody::new([body.freeze()].into()), None);
    }
    // Outputs in order: small ones copied into the current buffer, large ones as pieces of their own.
    let mut pieces = std::collections::VecDeque::new();
    for t in resp.outputs.iter().filter(|t| is_binary(t)) {
        if t.data.len() < OWN_PIECE {
            body.extend_from_slice(&t.data);
        } else {
            pieces.push_back(body.split().freeze());
            pieces.push_back(t.data.clone());
        }
    }
    pieces.push_back(body.freeze());
    pieces.retain(|p| !p.is_empty());
    (ResponseBody::new(pieces), Some(json_len))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode(body: Vec<u8>, header_length: usize) -> InferResult<Decoded> {
        decode_request(
            ModelRef::parse("m", None).unwrap(),
            &Bytes::from(body),
            Some(header_length),
        )
    }

    #[test]
    fn binary_inputs_take_their_bytes_in_order() {
        let header = r#"{"inputs":[{"name":"A","shape":[2],"datatype":"INT32","parameters":{"binary_data_size":8}},{"name":"B","shape":[1],"datatype":"INT32","data":[7]}],"outputs":[{"name":"O","parameters":{"binary_data":true}}]}"#;
        let mut body = header.as_bytes().to_vec();
        body.extend_from_slice(&[1, 0, 0, 0, 2, 0, 0, 0]);
        let d = decode(body, header.len()).unwrap();
        assert_eq!(&d.request.inputs[0].data[..], &[1, 0, 0, 0, 2, 0, 0, 0]);
        assert_eq!(&d.request.inputs[1].data[..], &[7, 0, 0, 0]);
        assert!(d.binary.is_binary("O") && !d.binary.is_binary("P"));
    }

    #[test]
    fn a_short_or_unclaimed_binary_section_is_an_error() {
        let header = r#"{"inputs":[{"name":"A","shape":[2],"datatype":"INT32","parameters":{"binary_data_size":8}}]}"#;
        let mut body = header.as_bytes().to_vec();
        body.extend_from_slice(&[1, 0, 0]);
        assert!(decode(body.clone(), header.len()).is_err());
        body.extend_from_slice(&[0; 9]);
        assert!(decode(body, header.len()).is_err());
    }

    #[test]
    fn binary_outputs_follow_the_json_header() {
        let t = Tensor {
            name: "O".into(),
            datatype: DataType::Int32,
            shape: vec![1],
            data: Bytes::from_static(&[5, 0, 0, 0]),
        };
        let resp = InferResponse {
            id: "7".into(),
            model_name: "m".into(),
            model_version: "1".into(),
            outputs: vec![t],
            in_regions: Vec::new(),
            text_tokens: None,
        };
        let all = BinaryOutputs {
            default: true,
            named: vec![],
        };
        let (body, len) = encode_response(&resp, &all);
        let body = body.to_bytes();
        let len = len.unwrap();
        let json: Value = serde_json::from_slice(&body[..len]).unwrap();
        assert_eq!(json["outputs"][0]["parameters"]["binary_data_size"], 4);
        assert_eq!(json["id"], "7");
        assert_eq!(&body[len..], &[5, 0, 0, 0]);
        let json_for_o = BinaryOutputs {
            default: true,
            named: vec![("O".into(), false)],
        };
        let (body, len) = encode_response(&resp, &json_for_o);
        let body = body.to_bytes();
        assert!(len.is_none());
        let json: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(json["outputs"][0]["data"][0], 5);
    }

    #[test]
    fn large_binary_outputs_follow_the_header_uncopied_and_in_order() {
        let tensor = |name: &str, data: Bytes| Tensor {
            name: name.into(),
            datatype: DataType::Uint8,
            shape: vec![data.len() as i64],
            data,
        };
        let large = Bytes::from(vec![7u8; OWN_PIECE]);
        let resp = InferResponse {
            id: String::new(),
            model_name: "m".into(),
            model_version: "1".into(),
            outputs: vec![
                tensor("A", Bytes::from_static(&[1, 2])),
                tensor("B", large.clone()),
                tensor("C", Bytes::from_static(&[3])),
            ],
            in_regions: Vec::new(),
            text_tokens: None,
        };
        let all = BinaryOutputs {
            default: true,
            named: vec![],
        };
        let (body, len) = encode_response(&resp, &all);
        assert_eq!(
            http_body::Body::size_hint(&body).exact(),
            Some((len.unwrap() + 3 + OWN_PIECE) as u64)
        );
        // The large output is the very buffer the model produced.
        assert!(body
            .pieces
            .iter()
            .any(|p| p.as_ptr() == large.as_ptr() && p.len() == large.len()));
        let whole = body.to_bytes();
        let len = len.unwrap();
        assert_eq!(&whole[len..len + 2], &[1, 2]);
        assert_eq!(&whole[len + 2..len + 2 + OWN_PIECE], &large[..]);
        assert_eq!(&whole[len + 2 + OWN_PIECE..], &[3]);
    }
}
