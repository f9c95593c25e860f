//! Triton's system shared memory extension through a real server: registering, listing and unregistering
//! regions over REST and gRPC, inference with inputs read from and outputs written into regions, every bad
//! name, key, offset and size answered 400 / INVALID_ARGUMENT naming the region, and the CUDA routes answered
//! without CUDA IPC.
mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use common::*;
use inferd::proto::model_infer_request::{InferInputTensor, InferRequestedOutputTensor};
use inferd::proto::*;
use serde_json::{json, Value};
use tonic::Code;

/// A POSIX shared memory object (a file in /dev/shm), removed on drop.
struct Object {
    key: String,
}

impl Object {
    fn new(size: usize) -> Self {
        static N: AtomicUsize = AtomicUsize::new(0);
        let key = format!(
            "/inferd-test-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        );
        let obj = Self { key };
        std::fs::write(obj.path(), vec![0u8; size]).unwrap();
        obj
    }

    fn path(&self) -> String {
        format!("/dev/shm{}", self.key)
    }

    fn write(&self, offset: usize, data: &[u8]) {
        let mut all = std::fs::read(self.path()).unwrap();
        all[offset..offset + data.len()].copy_from_slice(data);
        std::fs::write(self.path(), all).unwrap();
    }

    fn read(&self, offset: usize, len: usize) -> Vec<u8> {
        std::fs::read(self.path()).unwrap()[offset..offset + len].to_vec()
    }
}

impl Drop for Object {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(self.path());
    }
}

/// A region name no other test uses (they share one server).
fn unique(prefix: &str) -> String {
    static N: AtomicUsize = AtomicUsize::new(0);
    format!("{prefix}-{}", N.fetch_add(1, Ordering::Relaxed))
}

async fn register(base: &str, name: &str, key: &str, offset: u64, byte_size: u64) -> (u16, Value) {
    post_json(
        &format!("{base}/v2/systemsharedmemory/region/{name}/register"),
        &json!({"key": key, "offset": offset, "byte_size": byte_size}),
    )
    .await
}

fn error_of(v: &Value) -> String {
    v["error"].as_str().unwrap_or_default().to_string()
}

/// `simple`'s inputs written into one object: INPUT0 at 0, INPUT1 at 64.
fn simple_object() -> (Object, Vec<i32>, Vec<i32>) {
    let obj = Object::new(128);
    let (a, b) = simple_inputs(1);
    obj.write(0, &i32_bytes(&a));
    obj.write(64, &i32_bytes(&b));
    (obj, a, b)
}

fn shm_params(region: &str, byte_size: usize, offset: usize) -> Value {
    let mut p = json!({"shared_memory_region": region, "shared_memory_byte_size": byte_size});
    if offset != 0 {
        p["shared_memory_offset"] = offset.into();
    }
    p
}

#[tokio::test]
async fn regions_are_registered_listed_and_unregistered_over_rest() {
    let s = server();
    let obj = Object::new(4096);
    let (a, b) = (unique("list-a"), unique("list-b"));
    assert_eq!(register(&s.http, &a, &obj.key, 0, 1024).await.0, 200);
    assert_eq!(register(&s.http, &b, &obj.key, 1024, 3072).await.0, 200);
    let (status, one) = get(&format!("{}/v2/systemsharedmemory/region/{b}/status", s.http)).await;
    assert_eq!(status, 200);
    assert_eq!(
        one,
        json!([{"name": b, "key": obj.key, "offset": 1024, "byte_size": 3072}])
    );
    let (_, all) = get(&format!("{}/v2/systemsharedmemory/status", s.http)).await;
    let names: Vec<&str> = all
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|r| r["name"].as_str())
        .collect();
    assert!(names.contains(&a.as_str()) && names.contains(&b.as_str()), "{all}");

    let (status, _) = post_json(
        &format!("{}/v2/systemsharedmemory/region/{a}/unregister", s.http),
        &json!({}),
    )
    .await;
    assert_eq!(status, 200);
    let (status, err) = get(&format!("{}/v2/systemsharedmemory/region/{a}/status", s.http)).await;
    assert_eq!(status, 400);
    assert_eq!(
        error_of(&err),
        format!("Unable to find system shared memory region: '{a}'")
    );
    // Unregistering a region that is not there is not an error, as in Triton.
    let (status, _) = post_json(
        &format!("{}/v2/systemsharedmemory/region/{a}/unregister", s.http),
        &json!({}),
    )
    .await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn unregistering_all_regions_empties_the_list_over_rest_and_grpc() {
    let models = root().join("models");
    let s = spawn(args(&["--model-repository", path(&models)])).unwrap();
    let obj = Object::new(64);
    assert_eq!(register(&s.http, "r1", &obj.key, 0, 64).await.0, 200);
    let mut c = grpc(&s).await;
    c.system_shared_memory_register(SystemSharedMemoryRegisterRequest {
        name: "r2".into(),
        key: obj.key.clone(),
        offset: 32,
        byte_size: 32,
    })
    .await
    .unwrap();
    let listed = c
        .system_shared_memory_status(SystemSharedMemoryStatusRequest { name: String::new() })
        .await
        .unwrap()
        .into_inner()
        .regions;
    assert_eq!(listed.len(), 2);
    assert_eq!(
        (listed["r2"].offset, listed["r2"].byte_size, listed["r2"].key.as_str()),
        (32, 32, obj.key.as_str())
    );
    let (_, rest) = get(&format!("{}/v2/systemsharedmemory/status", s.http)).await;
    assert_eq!(rest.as_array().unwrap().len(), 2);

    let (status, _) = post_json(&format!("{}/v2/systemsharedmemory/unregister", s.http), &json!({})).await;
    assert_eq!(status, 200);
    assert_eq!(
        get(&format!("{}/v2/systemsharedmemory/status", s.http)).await.1,
        json!([])
    );
    c.system_shared_memory_register(SystemSharedMemoryRegisterRequest {
        name: "r3".into(),
        key: obj.key.clone(),
        offset: 0,
        byte_size: 8,
    })
    .await
    .unwrap();
    c.system_shared_memory_unregister(SystemSharedMemoryUnregisterRequest { name: String::new() })
        .await
        .unwrap();
    let listed = c
        .system_shared_memory_status(SystemSharedMemoryStatusRequest { name: String::new() })
        .await
        .unwrap()
        .into_inner()
        .regions;
    assert!(listed.is_empty());
}

#[tokio::test]
async fn bad_names_keys_offsets_and_sizes_get_400_naming_the_region() {
    let s = server();
    let obj = Object::new(256);
    let name = unique("bad");
    let cases: Vec<(&str, Value, &str)> = vec![
        (
            "a key with a '/' inside",
            json!({"key": "/a/b", "offset": 0, "byte_size": 8}),
            "invalid key",
        ),
        (
            "a '..' key",
            json!({"key": "/..", "offset": 0, "byte_size": 8}),
            "invalid key",
        ),
        (
            "an object that does not exist",
            json!({"key": "/inferd-no-such-object", "offset": 0, "byte_size": 8}),
            "Unable to open",
        ),
        (
            "a window past the object's end",
            json!({"key": obj.key, "offset": 200, "byte_size": 100}),
            "invalid args",
        ),
        (
            "an offset that overflows",
            json!({"key": obj.key, "offset": u64::MAX, "byte_size": 2}),
            "invalid args",
        ),
        (
            "an empty region",
            json!({"key": obj.key, "offset": 0, "byte_size": 0}),
            "byte_size",
        ),
        ("a body without byte_size", json!({"key": obj.key}), "byte_size"),
        (
            "a negative offset",
            json!({"key": obj.key, "offset": -1, "byte_size": 8}),
            "offset",
        ),
    ];
    for (what, body, says) in cases {
        let (status, err) = post_json(
            &format!("{}/v2/systemsharedmemory/region/{name}/register", s.http),
            &body,
        )
        .await;
        let err = error_of(&err);
        assert_eq!(status, 400, "{what}: {err}");
        assert!(
            err.contains(&format!("'{name}'")) && err.contains(says),
            "{what}: {err}"
        );
    }
    // Nothing was registered, and the server answers as before.
    let (status, _) = get(&format!("{}/v2/systemsharedmemory/region/{name}/status", s.http)).await;
    assert_eq!(status, 400);
    assert_eq!(register(&s.http, &name, &obj.key, 0, 256).await.0, 200);
    let (status, err) = register(&s.http, &name, &obj.key, 0, 8).await;
    assert_eq!(status, 400);
    assert_eq!(
        error_of(&err),
        format!("shared memory region '{name}' already in manager")
    );

    let mut c = grpc(s).await;
    let err = c
        .system_shared_memory_register(SystemSharedMemoryRegisterRequest {
            name: name.clone(),
            key: "/../../etc/passwd".into(),
            offset: 0,
            byte_size: 8,
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains(&format!("'{name}'")), "{}", err.message());
    let err = c
        .system_shared_memory_status(SystemSharedMemoryStatusRequest { name: unique("never") })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(
        err.message().starts_with("Unable to find system shared memory region"),
        "{}",
        err.message()
    );
}

#[tokio::test]
async fn simple_reads_its_inputs_from_and_writes_its_outputs_into_regions_over_rest() {
    let s = server();
    let (input, a, b) = simple_object();
    let output = Object::new(256);
    let (inr, outr) = (unique("rest-in"), unique("rest-out"));
    assert_eq!(register(&s.http, &inr, &input.key, 0, 128).await.0, 200);
    assert_eq!(register(&s.http, &outr, &output.key, 64, 192).await.0, 200);
    let body = json!({
        "inputs": [
            {"name": "INPUT0", "shape": [1, 16], "datatype": "INT32", "parameters": shm_params(&inr, 64, 0)},
            {"name": "INPUT1", "shape": [1, 16], "datatype": "INT32", "parameters": shm_params(&inr, 64, 64)},
        ],
        "outputs": [
            {"name": "OUTPUT0", "parameters": shm_params(&outr, 64, 0)},
            {"name": "OUTPUT1", "parameters": {"binary_data": false}},
        ],
    });
    let (status, resp) = post_json(&format!("{}/v2/models/simple/infer", s.http), &body).await;
    assert_eq!(status, 200, "{resp}");
    let out0 = &resp["outputs"][0];
    assert_eq!(out0["name"], "OUTPUT0");
    // As in Triton, neither data nor parameters (Triton's C++ client wants `binary_data_size` in any).
    assert!(out0.get("data").is_none() && out0.get("parameters").is_none(), "{resp}");
    let sum: Vec<i32> = a.iter().zip(&b).map(|(x, y)| x + y).collect();
    let diff: Vec<i32> = a.iter().zip(&b).map(|(x, y)| x - y).collect();
    // The region starts 64 bytes into the object.
    assert_eq!(i32_values(&output.read(64, 64)), sum);
    assert_eq!(resp["outputs"][1]["data"], json!(diff));
}

#[tokio::test]
async fn simple_takes_regions_over_grpc_beside_raw_contents_and_answers_with_an_empty_place() {
    let s = server();
    let (input, a, b) = simple_object();
    let output = Object::new(128);
    let (inr, outr) = (unique("grpc-in"), unique("grpc-out"));
    let mut c = grpc(s).await;
    for (name, key) in [(&inr, &input.key), (&outr, &output.key)] {
        c.system_shared_memory_register(SystemSharedMemoryRegisterRequest {
            name: name.clone(),
            key: key.clone(),
            offset: 0,
            byte_size: 128,
        })
        .await
        .unwrap();
    }
    let param = |c| InferParameter {
        parameter_choice: Some(c),
    };
    use infer_parameter::ParameterChoice::{Int64Param, StringParam};
    let region = |name: &str, size: i64, offset: i64| {
        let mut p = std::collections::HashMap::from([
            ("shared_memory_region".to_string(), param(StringParam(name.to_string()))),
            ("shared_memory_byte_size".to_string(), param(Int64Param(size))),
        ]);
        if offset != 0 {
            p.insert("shared_memory_offset".to_string(), param(Int64Param(offset)));
        }
        p
    };
    let mut in0 = InferInputTensor::raw("INPUT0", "INT32", vec![1, 16]);
    in0.parameters = region(&inr, 64, 0);
    let req = ModelInferRequest {
        model_name: "simple".into(),
        // INPUT0 from the region; INPUT1 in the only raw_input_contents entry.
        inputs: vec![in0, InferInputTensor::raw("INPUT1", "INT32", vec![1, 16])],
        raw_input_contents: vec![Bytes::from(i32_bytes(&b))],
        outputs: vec![
            InferRequestedOutputTensor {
                name: "OUTPUT0".into(),
                ..Default::default()
            },
            InferRequestedOutputTensor {
                name: "OUTPUT1".into(),
                parameters: region(&outr, 64, 64),
            },
        ],
        ..Default::default()
    };
    // The raw contents belong to the inputs not in shared memory: one entry per input is one too many.
    let mut too_many = req.clone();
    too_many.raw_input_contents.push(Bytes::from(i32_bytes(&a)));
    let err = c.model_infer(too_many).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(
        err.message()
            .contains("expected 1 raw_input_contents (one per input not in shared memory), got 2"),
        "{}",
        err.message()
    );
    let resp = c.model_infer(req).await.unwrap().into_inner();
    let sum: Vec<i32> = a.iter().zip(&b).map(|(x, y)| x + y).collect();
    let diff: Vec<i32> = a.iter().zip(&b).map(|(x, y)| x - y).collect();
    assert_eq!(resp.raw_output_contents.len(), 2);
    assert_eq!(i32_values(&resp.raw_output_contents[0]), sum);
    assert!(resp.raw_output_contents[1].is_empty());
    assert_eq!(
        resp.outputs[1].parameters["shared_memory_region"],
        param(StringParam(outr.clone()))
    );
    assert_eq!(i32_values(&output.read(64, 64)), diff);
}

/// A gRPC request for `simple_string` with both inputs in `region` (INPUT0 at 0, INPUT1 after it) and both
/// outputs in `out` (OUTPUT0 at 0, OUTPUT1 at 256).
fn string_request(region: &str, in0: usize, in1: usize, out: &str, out_size: i64) -> ModelInferRequest {
    let param = |c| InferParameter {
        parameter_choice: Some(c),
    };
    use infer_parameter::ParameterChoice::{Int64Param, StringParam};
    let region_params = |name: &str, size: i64, offset: i64| {
        std::collections::HashMap::from([
            ("shared_memory_region".to_string(), param(StringParam(name.to_string()))),
            ("shared_memory_byte_size".to_string(), param(Int64Param(size))),
            ("shared_memory_offset".to_string(), param(Int64Param(offset))),
        ])
    };
    let mut i0 = InferInputTensor::raw("INPUT0", "BYTES", vec![1, 16]);
    i0.parameters = region_params(region, in0 as i64, 0);
    let mut i1 = InferInputTensor::raw("INPUT1", "BYTES", vec![1, 16]);
    i1.parameters = region_params(region, in1 as i64, in0 as i64);
    ModelInferRequest {
        model_name: "simple_string".into(),
        inputs: vec![i0, i1],
        outputs: vec![
            InferRequestedOutputTensor {
                name: "OUTPUT0".into(),
                parameters: region_params(out, out_size, 0),
            },
            InferRequestedOutputTensor {
                name: "OUTPUT1".into(),
                parameters: region_params(out, out_size, 256),
            },
        ],
        ..Default::default()
    }
}

#[tokio::test]
async fn bytes_tensors_travel_length_prefixed_through_regions() {
    let s = server();
    let a: Vec<String> = (0..16).map(|i| i.to_string()).collect();
    let b: Vec<String> = (0..16).map(|_| "1".to_string()).collect();
    let raw0 = length_prefixed(&a.iter().map(|x| x.as_bytes()).collect::<Vec<_>>());
    let raw1 = length_prefixed(&b.iter().map(|x| x.as_bytes()).collect::<Vec<_>>());
    let input = Object::new(raw0.len() + raw1.len());
    input.write(0, &raw0);
    input.write(raw0.len(), &raw1);
    let output = Object::new(512);
    let (inr, outr) = (unique("str-in"), unique("str-out"));
    assert_eq!(
        register(&s.http, &inr, &input.key, 0, (raw0.len() + raw1.len()) as u64)
            .await
            .0,
        200
    );
    assert_eq!(register(&s.http, &outr, &output.key, 0, 512).await.0, 200);
    let mut c = grpc(s).await;
    let resp = c
        .model_infer(string_request(&inr, raw0.len(), raw1.len(), &outr, 256))
        .await
        .unwrap()
        .into_inner();
    assert!(resp.raw_output_contents.iter().all(|r| r.is_empty()));
    let written = resp.outputs[0].parameters["shared_memory_byte_size"].clone();
    let Some(infer_parameter::ParameterChoice::Int64Param(n)) = written.parameter_choice else {
        panic!("no byte size: {:?}", resp.outputs[0])
    };
    let sums: Vec<String> = (0..16).map(|i| (i + 1).to_string()).collect();
    assert_eq!(
        output.read(0, n as usize),
        length_prefixed(&sums.iter().map(|x| x.as_bytes()).collect::<Vec<_>>())
    );

    // An element whose length runs past the bytes given is refused, naming the region.
    let mut broken = raw0.clone();
    broken[0] = 200;
    input.write(0, &broken);
    let err = c
        .model_infer(string_request(&inr, raw0.len(), raw1.len(), &outr, 256))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(
        err.message().contains(&format!("'{inr}'")) && err.message().contains("malformed"),
        "{}",
        err.message()
    );
}

#[tokio::test]
async fn inputs_outside_their_region_or_of_the_wrong_size_are_refused_naming_the_region() {
    let s = server();
    let (input, _, _) = simple_object();
    let inr = unique("oob");
    assert_eq!(register(&s.http, &inr, &input.key, 0, 128).await.0, 200);
    let url = format!("{}/v2/models/simple/infer", s.http);
    let body = |p0: Value, p1: Value| {
        json!({"inputs": [
            {"name": "INPUT0", "shape": [1, 16], "datatype": "INT32", "parameters": p0},
            {"name": "INPUT1", "shape": [1, 16], "datatype": "INT32", "parameters": p1},
        ]})
    };
    let cases = [
        (
            "past the region's end",
            body(shm_params(&inr, 64, 0), shm_params(&inr, 64, 100)),
            "out of bounds",
        ),
        (
            "an offset that overflows",
            body(
                shm_params(&inr, 64, 0),
                json!({"shared_memory_region": inr, "shared_memory_byte_size": 64, "shared_memory_offset": u64::MAX}),
            ),
            "out of bounds",
        ),
        (
            "fewer bytes than the shape needs",
            body(shm_params(&inr, 60, 0), shm_params(&inr, 64, 64)),
            "byte size mismatch",
        ),
        (
            "a region that is not registered",
            body(shm_params("inferd-never-registered", 64, 0), shm_params(&inr, 64, 64)),
            "Unable to find",
        ),
        (
            "a region without its size",
            body(json!({"shared_memory_region": inr}), shm_params(&inr, 64, 64)),
            "together",
        ),
        (
            "a region and data both",
            json!({"inputs": [
                {"name": "INPUT0", "shape": [1, 16], "datatype": "INT32", "parameters": shm_params(&inr, 64, 0), "data": vec![0; 16]},
                {"name": "INPUT1", "shape": [1, 16], "datatype": "INT32", "parameters": shm_params(&inr, 64, 64)},
            ]}),
            "neither",
        ),
    ];
    for (what, body, says) in cases {
        let (status, err) = post_json(&url, &body).await;
        let err = error_of(&err);
        assert_eq!(status, 400, "{what}: {err}");
        assert!(err.contains(says), "{what}: {err}");
    }
    let (status, err) = post_json(&url, &body(shm_params(&inr, 64, 0), shm_params(&inr, 64, 100))).await;
    assert_eq!(status, 400);
    let err = error_of(&err);
    assert!(
        err.contains(&format!("'{inr}'")) && err.contains("offset 100") && err.contains("128 bytes"),
        "{err}"
    );
}

#[tokio::test]
async fn an_output_region_too_small_is_refused_with_the_sizes() {
    let s = server();
    let (input, _, _) = simple_object();
    let output = Object::new(128);
    let (inr, outr) = (unique("small-in"), unique("small-out"));
    assert_eq!(register(&s.http, &inr, &input.key, 0, 128).await.0, 200);
    assert_eq!(register(&s.http, &outr, &output.key, 0, 128).await.0, 200);
    let body = |out: Value| {
        json!({
            "inputs": [
                {"name": "INPUT0", "shape": [1, 16], "datatype": "INT32", "parameters": shm_params(&inr, 64, 0)},
                {"name": "INPUT1", "shape": [1, 16], "datatype": "INT32", "parameters": shm_params(&inr, 64, 64)},
            ],
            "outputs": [{"name": "OUTPUT0", "parameters": out}],
        })
    };
    let url = format!("{}/v2/models/simple/infer", s.http);
    let (status, err) = post_json(&url, &body(shm_params(&outr, 32, 0))).await;
    assert_eq!(status, 400);
    assert_eq!(
        error_of(&err),
        format!(
            "shared memory size specified with the request for output 'OUTPUT0' (32 bytes) should be at least 64 \
             bytes to hold the results (shared memory region '{outr}')"
        )
    );
    // An output window past the region's end is refused before the model runs.
    let (status, err) = post_json(&url, &body(shm_params(&outr, 64, 100))).await;
    assert_eq!(status, 400);
    assert!(error_of(&err).contains("output 'OUTPUT0'") && error_of(&err).contains(&format!("'{outr}'")));
    // A region larger than the output is fine.
    let (status, resp) = post_json(&url, &body(shm_params(&outr, 128, 0))).await;
    assert_eq!(status, 200, "{resp}");
    assert_eq!(
        i32_values(&output.read(0, 64)),
        i32_values(&input.read(0, 64))
            .iter()
            .zip(i32_values(&input.read(64, 64)))
            .map(|(a, b)| a + b)
            .collect::<Vec<_>>()
    );
}

#[tokio::test]
async fn a_region_unregistered_while_a_request_uses_it_still_receives_the_output() {
    let s = server();
    let output = Object::new(4);
    let outr = unique("in-use");
    assert_eq!(register(&s.http, &outr, &output.key, 0, 4).await.0, 200);
    let url = format!("{}/v2/models/slow/infer", s.http);
    let body = json!({
        "inputs": [{"name": "INPUT0", "shape": [1, 1], "datatype": "FP32", "data": [400.0]}],
        "outputs": [{"name": "OUTPUT0", "parameters": shm_params(&outr, 4, 0)}],
    });
    let running = tokio::spawn(async move { post_json(&url, &body).await });
    // Unregistered while the model sleeps (the request looked the region up on arrival).
    tokio::time::sleep(Duration::from_millis(150)).await;
    let (status, _) = post_json(
        &format!("{}/v2/systemsharedmemory/region/{outr}/unregister", s.http),
        &json!({}),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(
        get(&format!("{}/v2/systemsharedmemory/region/{outr}/status", s.http))
            .await
            .0,
        400
    );
    assert!(
        !running.is_finished(),
        "the request ended before its region was unregistered"
    );
    let (status, resp) = running.await.unwrap();
    assert_eq!(status, 200, "{resp}");
    // `slow` answers with its input.
    assert_eq!(f32_values(&output.read(0, 4)), vec![400.0]);
}

#[tokio::test]
async fn cuda_shared_memory_is_answered_without_cuda_ipc() {
    let s = server();
    assert_eq!(
        get(&format!("{}/v2/cudasharedmemory/status", s.http)).await,
        (200, json!([]))
    );
    let (status, err) = post_json(
        &format!("{}/v2/cudasharedmemory/region/gpu0/register", s.http),
        &json!({"raw_handle": {"b64": ""}, "device_id": 0, "byte_size": 64}),
    )
    .await;
    assert_eq!(status, 400);
    assert!(error_of(&err).contains("'gpu0'") && error_of(&err).contains("CUDA shared memory is not supported"));
    assert_eq!(
        post_json(&format!("{}/v2/cudasharedmemory/unregister", s.http), &json!({}))
            .await
            .0,
        200
    );
    let mut c = grpc(s).await;
    let err = c
        .cuda_shared_memory_register(CudaSharedMemoryRegisterRequest {
            name: "gpu0".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(
        err.message().contains("not supported by this server build"),
        "{}",
        err.message()
    );
    let status = c
        .cuda_shared_memory_status(CudaSharedMemoryStatusRequest { name: String::new() })
        .await
        .unwrap()
        .into_inner();
    assert!(status.regions.is_empty());
    c.cuda_shared_memory_unregister(CudaSharedMemoryUnregisterRequest { name: String::new() })
        .await
        .unwrap();
}

#[tokio::test]
async fn the_server_metadata_lists_system_shared_memory() {
    let (_, md) = get(&format!("{}/v2", server().http)).await;
    let ext: Vec<&str> = md["extensions"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(ext.contains(&"system_shared_memory"), "{md}");
    assert!(!ext.contains(&"cuda_shared_memory"), "{md}");
}

#[tokio::test]
async fn with_client_shared_memory_turned_off_every_use_is_refused_and_it_is_not_listed() {
    let models = root().join("models");
    let s = spawn(args(&[
        "--model-repository",
        path(&models),
        "--allow-client-shm",
        "false",
    ]))
    .unwrap();
    let (_, md) = get(&format!("{}/v2", s.http)).await;
    assert!(
        !md["extensions"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e == "system_shared_memory"),
        "{md}"
    );
    let obj = Object::new(128);
    let (status, err) = register(&s.http, "r", &obj.key, 0, 128).await;
    assert_eq!(status, 400);
    assert!(error_of(&err).contains("--allow-client-shm"), "{err}");
    assert_eq!(get(&format!("{}/v2/systemsharedmemory/status", s.http)).await.0, 400);
    let body = json!({"inputs": [
        {"name": "INPUT0", "shape": [1, 16], "datatype": "INT32", "parameters": shm_params("r", 64, 0)},
        {"name": "INPUT1", "shape": [1, 16], "datatype": "INT32", "parameters": shm_params("r", 64, 64)},
    ]});
    let (status, err) = post_json(&format!("{}/v2/models/simple/infer", s.http), &body).await;
    assert_eq!(status, 400);
    assert!(error_of(&err).contains("turned off"), "{err}");
    let err = grpc(&s)
        .await
        .system_shared_memory_status(SystemSharedMemoryStatusRequest { name: String::new() })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
}
