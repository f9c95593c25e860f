//! One whole inference request in-process, without sockets: the body's bytes → the front-end's decoder →
//! `Serving` (admission, routing, validation, the scheduler, one execution: on the calling thread for these fast
//! models, as `--inline-below-us` lets them) →
//! the front-end's encoder → the response's bytes, for each body kind the server takes:
//! - `request_path/json/*`: a KServe V2 JSON body through the HTTP front-end's decoder and encoder
//!   (`protocol::binary`, which reads a JSON-only body when no `Inference-Header-Content-Length` is given);
//! - `request_path/binary/*`: Triton's binary tensor extension (JSON header + raw bytes, binary outputs);
//! - `request_path/grpc/*`: a prost-encoded `ModelInferRequest` with `raw_input_contents`, decoded as tonic
//!   does, through `protocol::grpc_tensors`, the response encoded back to protobuf bytes.
//!
//! Models from the example repository at batch 1, served as `inferd serve` serves them, one request at a time: `identity` (FP32 [64], the built-in
//! identity backend: no model work, so the figure is the server's own cost) and `mlp` (ONNX FP32 [64]->[10]).
//! `request_path_stages/grpc_identity/*` splits the gRPC + identity case into decode, serving, encode.
//! `memcpy/602112` copies one 3x224x224 FP32 image, the floor for `request_path/binary/identity_image`, which
//! sends that image and has it back (both with throughput in bytes).
//!
//! Reading it against "Server CPU per request" in benches/RESULTS.md: that figure is what the server process
//! spends per request under load (sockets, HTTP/2 or HTTP/1 framing, tokio's scheduling and this path).
//! This path's time is wall time on one request (any wait in it included), so it is an upper bound on this
//! path's CPU share; what the RESULTS figure has beyond it is the transport. The stage rows show where this
//! path's time goes.
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use criterion::{black_box, criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use inferd::backend::identity::IdentityBackend;
use inferd::backend::ort::{find_library, OrtBackend};
use inferd::backend::Backend;
use inferd::error::{InferError, InferResult};
use inferd::lifecycle::Lifecycle;
use inferd::model_name::{ModelName, ModelRef};
use inferd::proto::model_infer_request::InferInputTensor;
use inferd::proto::ModelInferRequest;
use inferd::protocol::{binary, grpc_tensors};
use inferd::request::{InferRequest, InferResponse};
use inferd::serving::Serving;
use inferd::tensor::{DataType, Tensor};
use prost::Message;
use tokio::runtime::Runtime;

mod support;

/// One 3x224x224 FP32 image, in bytes.
const IMAGE_BYTES: usize = 3 * 224 * 224 * 4;

/// A model of the example repository, as a request names its tensors.
struct Model {
    name: &'static str,
    input: &'static str,
    output: &'static str,
    /// The input's shape at batch 1 (batch dimension first).
    shape: &'static [i64],
}

const IDENTITY: Model = Model {
    name: "identity",
    input: "INPUT0",
    output: "OUTPUT0",
    shape: &[1, 64],
};
const MLP: Model = Model {
    name: "mlp",
    input: "INPUT",
    output: "OUTPUT",
    shape: &[1, 64],
};
const IDENTITY_IMAGE: Model = Model {
    name: "identity_image",
    input: "INPUT0",
    output: "OUTPUT0",
    shape: &[1, 3, 224, 224],
};

impl Model {
    fn elements(&self) -> usize {
        self.shape.iter().product::<i64>() as usize
    }

    fn values(&self) -> Vec<f32> {
        (0..self.elements())
            .map(|i| ((i * 7919) % 1000) as f32 / 500.0 - 1.0)
            .collect()
    }

    fn raw(&self) -> Bytes {
        Bytes::copy_from_slice(bytemuck::cast_slice(&self.values()))
    }

    /// A KServe V2 JSON body with the data inline; no outputs named, so all come back as JSON.
    fn json_body(&self) -> Bytes {
        let body = serde_json::json!({
            "inputs": [{ "name": self.input, "shape": self.shape, "datatype": "FP32", "data": self.values() }]
        });
        Bytes::from(serde_json::to_vec(&body).expect("a JSON value serializes"))
    }

    /// A binary-extension body, as tritonclient sends one with binary inputs and outputs: the JSON header,
    /// then the input's bytes; and the header's length (`Inference-Header-Content-Length`).
    fn binary_body(&self) -> (Bytes, usize) {
        let raw = self.raw();
        let header = serde_json::json!({
            "inputs": [{
                "name": self.input, "shape": self.shape, "datatype": "FP32",
                "parameters": { "binary_data_size": raw.len() }
            }],
            "outputs": [{ "name": self.output, "parameters": { "binary_data": true } }]
        });
        let mut body = serde_json::to_vec(&header).expect("a JSON value serializes");
        let header_length = body.len();
        body.extend_from_slice(&raw);
        (Bytes::from(body), header_length)
    }

    /// A `ModelInferRequest` as the gRPC client puts it on the wire (the data in `raw_input_contents`).
    fn grpc_body(&self) -> Bytes {
        let msg = ModelInferRequest {
            model_name: self.name.into(),
            inputs: vec![InferInputTensor::raw(self.input, "FP32", self.shape.to_vec())],
            raw_input_contents: vec![self.raw()],
            ..Default::default()
        };
        Bytes::from(msg.encode_to_vec())
    }
}

/// The example repository's models served as `inferd serve` serves them, without the listeners.
struct Server {
    rt: Runtime,
    serving: Serving,
    /// Keeps the loaded versions' schedulers alive.
    _lifecycle: Arc<Lifecycle>,
    /// Whether `mlp` loaded (it needs ONNX Runtime).
    mlp: bool,
    /// Whether the repository has `identity_image`.
    image: bool,
}

fn start() -> Server {
    let repo = support::root().join("models");
    let mut backends: Vec<Arc<dyn Backend>> = vec![Arc::new(IdentityBackend::new())];
    match find_library(None).and_then(|lib| OrtBackend::new(lib, 1).map_err(|e| e.to_string())) {
        Ok(ort) => backends.push(Arc::new(ort)),
        Err(e) => eprintln!("request_path: ONNX Runtime not found ({e}); the mlp cases are skipped (`make setup`)"),
    }
    let with_ort = backends.len() > 1;
    let image = repo.join(IDENTITY_IMAGE.name).join("config.pbtxt").is_file();
    let mut names = vec![IDENTITY.name];
    names.extend(with_ort.then_some(MLP.name));
    names.extend(image.then_some(IDENTITY_IMAGE.name));
    let names: Vec<ModelName> = names
        .into_iter()
        .map(|n| ModelName::parse(n).expect("a valid model name"))
        .collect();

    let (rt, lifecycle, serving) = support::example_serving(backends, Some(&names));
    for name in &names {
        let model = ModelRef::parse(name.as_str(), None).expect("a valid model name");
        assert!(
            serving.model_ready(&model).unwrap_or(false),
            "model '{}' did not load (see the log above)",
            name.as_str()
        );
    }
    Server {
        rt,
        serving,
        _lifecycle: lifecycle,
        mlp: with_ort,
        image,
    }
}

/// What the REST front-end's infer handler does with a body: the model named in the URL checked, the body
/// decoded, served, the response encoded (the body, and the JSON header's length when binary data follows).
async fn http_request(
    serving: &Serving,
    model: &str,
    body: &Bytes,
    header_length: Option<usize>,
) -> InferResult<(binary::ResponseBody, Option<usize>)> {
    let decoded = binary::decode_request(ModelRef::parse(model, None)?, body, header_length)?;
    let (response, trace) = serving.infer_traced(decoded.request).await;
    let encoded = binary::encode_response(&response?, &decoded.binary);
    if let Some(trace) = trace {
        trace.finish();
    }
    Ok(encoded)
}

/// A protobuf message as tonic's codec decodes it (a bad one is the client's mistake).
fn grpc_decode(body: &Bytes) -> InferResult<InferRequest> {
    let msg = ModelInferRequest::decode(body.clone())
        .map_err(|e| InferError::invalid(format!("malformed protobuf message: {e}")))?;
    grpc_tensors::decode_request(msg).map_err(|u| u.error)
}

/// A response encoded as tonic's codec writes it into its buffer.
fn grpc_encode(response: InferResponse) -> Bytes {
    let msg = grpc_tensors::encode_response(response);
    let mut buf = BytesMut::with_capacity(msg.encoded_len());
    // The buffer was sized for the message, so encoding cannot run out of room.
    let _ = msg.encode(&mut buf);
    buf.freeze()
}

/// What the gRPC front-end's `model_infer` does with a message's bytes.
async fn grpc_request(serving: &Serving, body: &Bytes) -> InferResult<Bytes> {
    let request = grpc_decode(body)?;
    let (response, trace) = serving.infer_traced(request).await;
    let encoded = grpc_encode(response?);
    if let Some(trace) = trace {
        trace.finish();
    }
    Ok(encoded)
}

fn bench(c: &mut Criterion) {
    let server = start();
    let (rt, serving) = (&server.rt, &server.serving);
    let mut models = vec![&IDENTITY];
    if server.mlp {
        models.push(&MLP);
    }

    let mut g = c.benchmark_group("request_path/json");
    for m in &models {
        let body = m.json_body();
        g.bench_function(m.name, |b| {
            b.iter(|| {
                rt.block_on(http_request(serving, m.name, black_box(&body), None))
                    .expect("the request is served")
            })
        });
    }
    g.finish();

    let mut g = c.benchmark_group("request_path/binary");
    for m in &models {
        let (body, header_length) = m.binary_body();
        g.bench_function(m.name, |b| {
            b.iter(|| {
                rt.block_on(http_request(serving, m.name, black_box(&body), Some(header_length)))
                    .expect("the request is served")
            })
        });
    }
    if server.image {
        // Last in the group: the throughput holds for the benchmarks after it.
        let m = &IDENTITY_IMAGE;
        let (body, header_length) = m.binary_body();
        g.throughput(Throughput::Bytes(2 * IMAGE_BYTES as u64));
        g.bench_function("identity_image", |b| {
            b.iter(|| {
                rt.block_on(http_request(serving, m.name, black_box(&body), Some(header_length)))
                    .expect("the request is served")
            })
        });
    }
    g.finish();

    let mut g = c.benchmark_group("request_path/grpc");
    for m in &models {
        let body = m.grpc_body();
        g.bench_function(m.name, |b| {
            b.iter(|| {
                rt.block_on(grpc_request(serving, black_box(&body)))
                    .expect("the request is served")
            })
        });
    }
    g.finish();

    // gRPC + identity in stages: the three add up to about the whole request above.
    let mut g = c.benchmark_group("request_path_stages/grpc_identity");
    let body = IDENTITY.grpc_body();
    g.bench_function("decode", |b| {
        b.iter(|| grpc_decode(black_box(&body)).expect("the message decodes"))
    });
    let request = grpc_decode(&body).expect("the message decodes");
    // Cloning a request shares its tensors' bytes; it is left out of the time all the same.
    g.bench_function("infer", |b| {
        b.iter_batched(
            || request.clone(),
            |r| rt.block_on(serving.infer(r)).expect("the request is served"),
            BatchSize::SmallInput,
        )
    });
    let output = Tensor {
        name: IDENTITY.output.into(),
        datatype: DataType::Fp32,
        shape: IDENTITY.shape.to_vec(),
        data: IDENTITY.raw(),
    };
    g.bench_function("encode", |b| {
        b.iter_batched(
            || InferResponse {
                id: String::new(),
                model_name: IDENTITY.name.into(),
                model_version: "1".into(),
                outputs: vec![output.clone()],
                in_regions: Vec::new(),
                text_tokens: None,
            },
            grpc_encode,
            BatchSize::SmallInput,
        )
    });
    g.finish();

    // The floor for moving an image: one copy between two buffers.
    let mut g = c.benchmark_group("memcpy");
    g.throughput(Throughput::Bytes(IMAGE_BYTES as u64));
    let src = vec![1u8; IMAGE_BYTES];
    let mut dst = vec![0u8; IMAGE_BYTES];
    g.bench_function(IMAGE_BYTES.to_string(), |b| {
        b.iter(|| {
            dst.copy_from_slice(black_box(&src));
            black_box(&mut dst);
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
