//! A gRPC `ModelInfer` message: arbitrary bytes decoded as a `ModelInferRequest` (what tonic's codec does),
//! then its tensors decoded (`grpc_tensors::decode_request`, as `GRPCInferenceService::model_infer`), then
//! size-checked, validated and echoed.
#![no_main]

use inferd::proto::ModelInferRequest;
use inferd::protocol::grpc_tensors::decode_request;
use inferd::protocol::json::JsonData;
use libfuzzer_sys::fuzz_target;
use prost::Message;

mod common;

fuzz_target!(|data: &[u8]| {
    let Ok(msg) = ModelInferRequest::decode(data) else {
        return;
    };
    let n_inputs = msg.inputs.len();
    let n_outputs = msg.outputs.len();
    let Ok(req) = decode_request(msg) else {
        return;
    };
    assert_eq!(req.inputs.len(), n_inputs);
    assert_eq!(req.outputs.len(), n_outputs);
    for t in &req.inputs {
        // Whatever the bytes, a tensor can be written as JSON without panicking (raw contents are unchecked
        // until validation).
        serde_json::to_string(&JsonData(t)).expect("tensor data serializes");
    }
    common::serve(&req, &Default::default());
});
