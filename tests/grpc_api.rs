//! The gRPC front-end, through a real server: every RPC, raw and typed tensor contents, streaming, and every
//! error case with its status code.
mod common;

use bytes::Bytes;
use common::*;
use inferd::proto::model_infer_request::{InferInputTensor, InferRequestedOutputTensor};
use inferd::proto::*;
use tonic::Code;

fn input(name: &str, datatype: &str, shape: Vec<i64>) -> InferInputTensor {
    InferInputTensor::raw(name, datatype, shape)
}

fn simple_raw(rows: usize, id: &str) -> ModelInferRequest {
    let (a, b) = simple_inputs(rows);
    ModelInferRequest {
        model_name: "simple".into(),
        id: id.into(),
        inputs: vec![
            input("INPUT0", "INT32", vec![rows as i64, 16]),
            input("INPUT1", "INT32", vec![rows as i64, 16]),
        ],
        raw_input_contents: vec![Bytes::from(i32_bytes(&a)), Bytes::from(i32_bytes(&b))],
        ..Default::default()
    }
}

fn sums(rows: usize) -> (Vec<i32>, Vec<i32>) {
    let (a, b) = simple_inputs(rows);
    (
        a.iter().zip(&b).map(|(x, y)| x + y).collect(),
        a.iter().zip(&b).map(|(x, y)| x - y).collect(),
    )
}

#[tokio::test]
async fn health_rpcs_report_live_and_ready() {
    let mut c = grpc(server()).await;
    assert!(c.server_live(ServerLiveRequest {}).await.unwrap().into_inner().live);
    assert!(c.server_ready(ServerReadyRequest {}).await.unwrap().into_inner().ready);
    let ready = c
        .model_ready(ModelReadyRequest {
            name: "simple".into(),
            version: "1".into(),
        })
        .await
        .unwrap();
    assert!(ready.into_inner().ready);
    let unknown = c
        .model_ready(ModelReadyRequest {
            name: "nope".into(),
            version: String::new(),
        })
        .await
        .unwrap();
    assert!(
        !unknown.into_inner().ready,
        "an unknown model is not ready, as in Triton"
    );
}

#[tokio::test]
async fn metadata_and_config_rpcs_describe_the_model() {
    let mut c = grpc(server()).await;
    let md = c.server_metadata(ServerMetadataRequest {}).await.unwrap().into_inner();
    assert_eq!(md.name, "inferd");
    assert!(md.extensions.contains(&"binary_tensor_data".to_string()));
    let mm = c
        .model_metadata(ModelMetadataRequest {
            name: "mlp".into(),
            version: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(mm.versions, vec!["1"]);
    assert_eq!(mm.inputs[0].name, "INPUT");
    assert_eq!(mm.inputs[0].datatype, "FP32");
    assert_eq!(mm.inputs[0].shape, vec![-1, 64]);
    assert_eq!(mm.outputs[0].shape, vec![-1, 10]);
    let cfg = c
        .model_config(ModelConfigRequest {
            name: "mlp".into(),
            version: "1".into(),
        })
        .await
        .unwrap()
        .into_inner();
    let cfg = cfg.config.expect("config");
    assert_eq!(cfg.max_batch_size, 64);
    assert!(matches!(
        cfg.scheduling_choice,
        Some(model_config::SchedulingChoice::DynamicBatching(_))
    ));
}

#[tokio::test]
async fn raw_contents_infer_answers_in_raw_output_contents() {
    let mut c = grpc(server()).await;
    let resp = c.model_infer(simple_raw(2, "g-1")).await.unwrap().into_inner();
    assert_eq!(resp.id, "g-1");
    assert_eq!(resp.model_name, "simple");
    assert_eq!(resp.model_version, "1");
    assert_eq!(resp.outputs.len(), 2);
    assert_eq!(resp.outputs[0].shape, vec![2, 16]);
    assert_eq!(resp.outputs[0].datatype, "INT32");
    let (sum, diff) = sums(2);
    assert_eq!(i32_values(&resp.raw_output_contents[0]), sum);
    assert_eq!(i32_values(&resp.raw_output_contents[1]), diff);
}

#[tokio::test]
async fn typed_contents_are_accepted_and_requested_outputs_respected() {
    let (a, b) = simple_inputs(1);
    let mut i0 = input("INPUT0", "INT32", vec![1, 16]);
    i0.contents = Some(InferTensorContents {
        int_contents: a.clone(),
        ..Default::default()
    });
    let mut i1 = input("INPUT1", "INT32", vec![1, 16]);
    i1.contents = Some(InferTensorContents {
        int_contents: b.clone(),
        ..Default::default()
    });
    let req = ModelInferRequest {
        model_name: "simple".into(),
        model_version: "1".into(),
        inputs: vec![i0, i1],
        outputs: vec![InferRequestedOutputTensor {
            name: "OUTPUT1".into(),
            ..Default::default()
        }],
        ..Default::default()
    };
    let resp = grpc(server()).await.model_infer(req).await.unwrap().into_inner();
    assert_eq!(resp.outputs.len(), 1);
    assert_eq!(resp.outputs[0].name, "OUTPUT1");
    assert_eq!(i32_values(&resp.raw_output_contents[0]), sums(1).1);
}

#[tokio::test]
async fn typed_bytes_contents_work_for_string_models() {
    let mut c = grpc(server()).await;
    let strs = |v: &[i64]| InferTensorContents {
        bytes_contents: v.iter().map(|x| Bytes::from(x.to_string())).collect(),
        ..Default::default()
    };
    let a: Vec<i64> = (0..16).collect();
    let b: Vec<i64> = (0..16).map(|x| -x * 2).collect();
    let mut i0 = input("INPUT0", "BYTES", vec![1, 16]);
    i0.contents = Some(strs(&a));
    let mut i1 = input("INPUT1", "BYTES", vec![1, 16]);
    i1.contents = Some(strs(&b));
    let req = ModelInferRequest {
        model_name: "simple_string".into(),
        inputs: vec![i0, i1],
        ..Default::default()
    };
    let resp = c.model_infer(req).await.unwrap().into_inner();
    assert_eq!(resp.outputs[0].datatype, "BYTES");
    // Raw BYTES: each element is a 4-byte little-endian length then the bytes.
    let raw = &resp.raw_output_contents[0];
    let mut got = Vec::new();
    let mut at = 0;
    while at < raw.len() {
        let n = u32::from_le_bytes(raw[at..at + 4].try_into().unwrap()) as usize;
        got.push(String::from_utf8(raw[at + 4..at + 4 + n].to_vec()).unwrap());
        at += 4 + n;
    }
    let want: Vec<String> = a.iter().zip(&b).map(|(x, y)| (x + y).to_string()).collect();
    assert_eq!(got, want);
}

#[tokio::test]
async fn statistics_rpc_counts_what_was_served() {
    let mut c = grpc(server()).await;
    let count = |r: ModelStatisticsResponse| r.model_stats[0].inference_stats.unwrap().success.unwrap().count;
    let stats_req = || ModelStatisticsRequest {
        name: "identity_fp64".into(),
        version: String::new(),
    };
    let before = count(c.model_statistics(stats_req()).await.unwrap().into_inner());
    for _ in 0..3 {
        let req = ModelInferRequest {
            model_name: "identity_fp64".into(),
            inputs: vec![input("INPUT0", "FP64", vec![1, 2])],
            raw_input_contents: vec![Bytes::from(
                [1.5f64, -2.0].iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<_>>(),
            )],
            ..Default::default()
        };
        c.model_infer(req).await.unwrap();
    }
    let after = count(c.model_statistics(stats_req()).await.unwrap().into_inner());
    assert_eq!(after - before, 3);
    let all = c
        .model_statistics(ModelStatisticsRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert!(all.model_stats.iter().any(|m| m.name == "simple_string"));
}

#[tokio::test]
async fn stream_infer_answers_every_request_with_its_id() {
    let mut c = grpc(server()).await;
    let mut requests: Vec<ModelInferRequest> = (0..10).map(|i| simple_raw(1 + i % 3, &format!("s-{i}"))).collect();
    // One bad request in the middle gets an error message and does not end the stream.
    requests[4].inputs[0].datatype = "FP32".into();
    let outbound = tokio_stream::iter(requests);
    let mut inbound = c.model_stream_infer(outbound).await.unwrap().into_inner();
    let mut seen = Vec::new();
    while let Some(msg) = inbound.message().await.unwrap() {
        let resp = msg.infer_response.expect("response");
        let i: usize = resp.id.trim_start_matches("s-").parse().unwrap();
        if i == 4 {
            assert!(msg.error_message.contains("INPUT0"), "{}", msg.error_message);
        } else {
            assert!(msg.error_message.is_empty(), "{}", msg.error_message);
            assert_eq!(i32_values(&resp.raw_output_contents[0]), sums(1 + i % 3).0);
        }
        seen.push(i);
    }
    seen.sort();
    assert_eq!(seen, (0..10).collect::<Vec<_>>());
}

async fn expect_status(req: ModelInferRequest, code: Code, needles: &[&str]) {
    let err = grpc(server()).await.model_infer(req).await.unwrap_err();
    assert_eq!(err.code(), code, "{}", err.message());
    for n in needles {
        assert!(err.message().contains(n), "'{}' does not mention '{n}'", err.message());
    }
}

#[tokio::test]
async fn errors_map_to_grpc_status_codes() {
    let mut unknown = simple_raw(1, "");
    unknown.model_name = "nope".into();
    expect_status(unknown, Code::NotFound, &["Request for unknown model"]).await;
    let mut bad_version = simple_raw(1, "");
    bad_version.model_version = "7".into();
    expect_status(bad_version, Code::NotFound, &["Request for unknown model", "version 7"]).await;
    let mut wrong_type = simple_raw(1, "");
    wrong_type.inputs[1].datatype = "INT64".into();
    expect_status(wrong_type, Code::InvalidArgument, &["INPUT1", "INT64", "INT32"]).await;
    let mut wrong_shape = simple_raw(1, "");
    wrong_shape.inputs[0].shape = vec![1, 8];
    expect_status(wrong_shape, Code::InvalidArgument, &["INPUT0", "[1,8]"]).await;
    let mut short = simple_raw(1, "");
    short.raw_input_contents[0] = Bytes::from_static(&[0; 12]);
    expect_status(short, Code::InvalidArgument, &["INPUT0", "Expected 64, got 12"]).await;
    let mut missing = simple_raw(1, "");
    missing.inputs.pop();
    missing.raw_input_contents.pop();
    expect_status(missing, Code::InvalidArgument, &["missing required input", "INPUT1"]).await;
    let mut mismatched = simple_raw(1, "");
    mismatched.raw_input_contents.pop();
    expect_status(mismatched, Code::InvalidArgument, &["raw_input_contents"]).await;
    let too_big = simple_raw(9, "");
    expect_status(too_big, Code::InvalidArgument, &["batch-size must be <= 8"]).await;
}

#[tokio::test]
async fn malformed_protobuf_is_invalid_argument() {
    // A hand-made gRPC frame whose payload is not a ModelInferRequest.
    let mut body = vec![0u8];
    let payload = [0xffu8, 0xff, 0xff, 0xff, 0x0f, 0x01];
    body.extend((payload.len() as u32).to_be_bytes());
    body.extend(payload);
    let client = reqwest::Client::builder().http2_prior_knowledge().build().unwrap();
    let resp = client
        .post(format!("{}/inference.GRPCInferenceService/ModelInfer", server().grpc))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(body)
        .send()
        .await
        .unwrap();
    // gRPC reports the status in the headers when there is no body ("trailers-only").
    let status = resp
        .headers()
        .get("grpc-status")
        .map(|v| v.to_str().unwrap().to_string());
    assert_eq!(
        status.as_deref(),
        Some("3"),
        "INVALID_ARGUMENT is 3; headers: {:?}",
        resp.headers()
    );
}

#[tokio::test]
async fn typed_contents_beside_raw_contents_are_refused_in_triton_s_words() {
    let mut both = simple_raw(1, "");
    both.inputs[0].contents = Some(InferTensorContents {
        int_contents: vec![0; 16],
        ..Default::default()
    });
    expect_status(
        both,
        Code::InvalidArgument,
        &["contents field must not be specified when using raw_input_contents for 'INPUT0' for model 'simple'"],
    )
    .await;
}

/// The SETTINGS_MAX_CONCURRENT_STREAMS a gRPC server advertises to a new HTTP/2 connection.
async fn advertised_streams(grpc_url: &str) -> usize {
    let addr = grpc_url.strip_prefix("http://").unwrap();
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (_client, mut connection) = h2::client::handshake(tcp).await.unwrap();
    // Until the server's SETTINGS arrive the client assumes no limit; let the connection read them.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while std::time::Instant::now() < deadline {
        let _ = tokio::time::timeout(std::time::Duration::from_millis(50), &mut connection).await;
        if connection.max_concurrent_send_streams() != usize::MAX {
            break;
        }
    }
    connection.max_concurrent_send_streams()
}

#[tokio::test]
async fn one_connection_may_open_only_a_bounded_number_of_streams() {
    assert_eq!(advertised_streams(&server().grpc).await, 1024, "the default bound");
    let s = spawn(args(&[
        "--model-repository",
        path(&root().join("models")),
        "--grpc-max-concurrent-streams",
        "7",
    ]))
    .unwrap();
    assert_eq!(advertised_streams(&s.grpc).await, 7);
}
