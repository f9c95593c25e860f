//! Sequence batching through a real server: Triton's sequence parameters over REST and gRPC, a sequence's
//! requests in order with its implicit state fed back, interleaved sequences kept apart, the control inputs the
//! server fills in, both strategies, idle release and END with their clear refusals, and configs that cannot
//! load. `simple_accumulator` answers the running sum of a sequence's inputs (its state), `sequence_controls`
//! echoes the controls it was given.
mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::*;
use futures::future::join_all;
use inferd::proto::infer_parameter::ParameterChoice;
use inferd::proto::model_infer_request::InferInputTensor;
use inferd::proto::{InferParameter, ModelInferRequest};
use serde_json::{json, Value};

/// Sends one value of a sequence over REST; returns the status and the body.
async fn send(model: &str, id: Value, value: i32, start: bool, end: bool) -> (u16, Value) {
    let body = json!({
        "inputs": [{"name": "INPUT", "shape": [1, 1], "datatype": "INT32", "data": [value]}],
        "parameters": {"sequence_id": id, "sequence_start": start, "sequence_end": end},
    });
    post_json(&format!("{}/v2/models/{model}/infer", server().http), &body).await
}

fn output(v: &Value, name: &str) -> Value {
    v["outputs"]
        .as_array()
        .and_then(|o| o.iter().find(|t| t["name"] == name))
        .map(|t| t["data"][0].clone())
        .unwrap_or(Value::Null)
}

/// Sends `values` as one sequence, one request at a time; returns each answer's OUTPUT.
async fn sequence(model: &str, id: Value, values: &[i32]) -> Vec<i64> {
    let mut out = Vec::new();
    for (i, &v) in values.iter().enumerate() {
        let (status, body) = send(model, id.clone(), v, i == 0, i + 1 == values.len()).await;
        assert_eq!(status, 200, "{body}");
        out.push(output(&body, "OUTPUT").as_i64().expect("an integer OUTPUT"));
    }
    out
}

fn running_sums(values: &[i32]) -> Vec<i64> {
    values
        .iter()
        .scan(0i64, |acc, &v| {
            *acc += v as i64;
            Some(*acc)
        })
        .collect()
}

#[tokio::test]
async fn simple_sequence_answers_as_tritons_examples_expect() {
    let out = sequence("simple_sequence", json!(9001), &[0, 11, 7, 5]).await;
    assert_eq!(out, vec![1, 11, 7, 5], "START adds one on the first request only");
    let out = sequence("simple_sequence", json!("a-string-id"), &[20, -11]).await;
    assert_eq!(out, vec![21, -11]);
}

#[tokio::test]
async fn the_state_a_request_leaves_is_fed_to_the_sequences_next_request() {
    let values = [3, 4, -2, 10, 0, 7];
    assert_eq!(
        sequence("simple_accumulator", json!(9101), &values).await,
        running_sums(&values)
    );
}

#[tokio::test]
async fn interleaved_sequences_each_keep_their_own_exact_sum() {
    for model in ["simple_accumulator", "accumulator_oldest"] {
        // Twelve sequences at once, more than one instance's slots for the oldest strategy's 2 x 4: some wait in
        // the backlog until others end.
        let runs = (0..12).map(|k| async move {
            let values: Vec<i32> = (1..=8).map(|i| i * (k + 1) - 3 * k).collect();
            let id = json!(9200 + k as u64);
            (sequence(model, id, &values).await, running_sums(&values))
        });
        for (got, want) in join_all(runs).await {
            assert_eq!(got, want, "{model}");
        }
    }
}

#[tokio::test]
async fn string_and_numeric_ids_are_different_sequences() {
    let (s, b) = send("simple_accumulator", json!(9301), 5, true, false).await;
    assert_eq!(s, 200, "{b}");
    let (s, b) = send("simple_accumulator", json!("9301"), 100, true, false).await;
    assert_eq!(s, 200, "{b}");
    let (_, b) = send("simple_accumulator", json!(9301), 1, false, true).await;
    assert_eq!(output(&b, "OUTPUT"), json!(6));
    let (_, b) = send("simple_accumulator", json!("9301"), 1, false, true).await;
    assert_eq!(output(&b, "OUTPUT"), json!(101));
}

#[tokio::test]
async fn control_inputs_are_filled_in_per_request() {
    let id = 9401u64;
    let expect = [(true, false), (false, false), (false, true)];
    for (i, (start, end)) in expect.into_iter().enumerate() {
        let (status, b) = send("sequence_controls", json!(id), i as i32, start, end).await;
        assert_eq!(status, 200, "{b}");
        assert_eq!(output(&b, "OUT_INPUT"), json!(i));
        assert_eq!(output(&b, "OUT_START").as_f64(), Some(if start { 1.0 } else { 0.0 }));
        assert_eq!(output(&b, "OUT_END"), json!(end));
        assert_eq!(output(&b, "OUT_READY"), json!(1));
        assert_eq!(output(&b, "OUT_CORRID"), json!(id));
    }
}

#[tokio::test]
async fn a_sequence_model_refuses_a_request_without_a_sequence_id_in_tritons_words() {
    let body = json!({"inputs": [{"name": "INPUT", "shape": [1, 1], "datatype": "INT32", "data": [1]}]});
    let (status, b) = post_json(&format!("{}/v2/models/simple_accumulator/infer", server().http), &body).await;
    assert_eq!(status, 400);
    assert_eq!(
        b["error"],
        "inference request to model 'simple_accumulator' must specify a non-zero or non-empty correlation ID"
    );
    let (status, _) = send("simple_accumulator", json!(0), 1, true, false).await;
    assert_eq!(status, 400, "0 means no sequence");
}

#[tokio::test]
async fn a_request_without_start_for_an_unknown_sequence_is_refused() {
    let (status, b) = send("simple_accumulator", json!(9501), 1, false, false).await;
    assert_eq!(status, 400);
    assert_eq!(
        b["error"],
        "inference request for sequence 9501 to model 'simple_accumulator' must specify the START flag on the \
         first request of the sequence"
    );
}

#[tokio::test]
async fn end_frees_the_sequence_and_a_new_start_begins_from_zero() {
    assert_eq!(sequence("simple_accumulator", json!(9601), &[5, 6]).await, vec![5, 11]);
    let (status, b) = send("simple_accumulator", json!(9601), 1, false, false).await;
    assert_eq!(status, 400, "after END the id is free: {b}");
    assert_eq!(sequence("simple_accumulator", json!(9601), &[2, 2]).await, vec![2, 4]);
}

#[tokio::test]
async fn an_idle_sequence_is_released_and_its_next_request_refused() {
    // accumulator_idle releases a sequence after 300 ms without a request.
    let (s, b) = send("accumulator_idle", json!(9701), 4, true, false).await;
    assert_eq!(s, 200, "{b}");
    tokio::time::sleep(Duration::from_millis(100)).await;
    let (_, b) = send("accumulator_idle", json!(9701), 1, false, false).await;
    assert_eq!(output(&b, "OUTPUT"), json!(5), "still held within the idle time");
    tokio::time::sleep(Duration::from_millis(600)).await;
    let (status, b) = send("accumulator_idle", json!(9701), 1, false, false).await;
    assert_eq!(status, 400);
    assert!(
        b["error"]
            .as_str()
            .unwrap_or_default()
            .contains("must specify the START flag"),
        "{b}"
    );
    let (_, b) = send("accumulator_idle", json!(9701), 7, true, true).await;
    assert_eq!(
        output(&b, "OUTPUT"),
        json!(7),
        "a new START begins from the initial state"
    );
}

fn grpc_request(model: &str, id: ParameterChoice, value: i32, start: bool, end: bool) -> ModelInferRequest {
    let mut parameters = HashMap::new();
    let p = |c| InferParameter {
        parameter_choice: Some(c),
    };
    parameters.insert("sequence_id".to_string(), p(id));
    parameters.insert("sequence_start".to_string(), p(ParameterChoice::BoolParam(start)));
    parameters.insert("sequence_end".to_string(), p(ParameterChoice::BoolParam(end)));
    ModelInferRequest {
        model_name: model.into(),
        id: format!("r{value}"),
        parameters,
        inputs: vec![InferInputTensor {
            name: "INPUT".into(),
            datatype: "INT32".into(),
            shape: vec![1, 1],
            ..Default::default()
        }],
        raw_input_contents: vec![i32_bytes(&[value]).into()],
        ..Default::default()
    }
}

#[tokio::test]
async fn grpc_sequences_with_int_uint_and_string_ids_accumulate() {
    let mut client = grpc(server()).await;
    let ids: [fn() -> ParameterChoice; 3] = [
        || ParameterChoice::Int64Param(9801),
        || ParameterChoice::Uint64Param(9802),
        || ParameterChoice::StringParam("grpc-9803".into()),
    ];
    for id in ids {
        let mut got = Vec::new();
        for (i, v) in [1, 2, 3].into_iter().enumerate() {
            let r = client
                .model_infer(grpc_request("simple_accumulator", id(), v, i == 0, i == 2))
                .await
                .expect("infer")
                .into_inner();
            got.push(i32_values(&r.raw_output_contents[0])[0]);
        }
        assert_eq!(got, vec![1, 3, 6]);
    }
}

#[tokio::test]
async fn a_grpc_stream_runs_each_sequence_in_order_and_answers_with_request_ids() {
    let mut client = grpc(server()).await;
    let mut requests = Vec::new();
    // Three sequences interleaved on one stream, sent without waiting for answers.
    for i in 0..6 {
        for k in 0..3i64 {
            let mut r = grpc_request(
                "simple_accumulator",
                ParameterChoice::Int64Param(9900 + k),
                (i + 1) * (k as i32 + 1),
                i == 0,
                i == 5,
            );
            r.id = format!("{}_{i}", 9900 + k);
            requests.push(r);
        }
    }
    let mut responses = client
        .model_stream_infer(futures::stream::iter(requests))
        .await
        .expect("stream")
        .into_inner();
    let mut by_id = HashMap::new();
    while let Some(m) = responses.message().await.expect("a message") {
        assert_eq!(m.error_message, "");
        let r = m.infer_response.expect("a response");
        by_id.insert(r.id.clone(), i32_values(&r.raw_output_contents[0])[0]);
    }
    assert_eq!(by_id.len(), 18);
    for k in 0..3 {
        for i in 0..6 {
            let step = k + 1;
            let want = step * (1..=i + 1).sum::<i32>();
            assert_eq!(by_id[&format!("{}_{i}", 9900 + k)], want, "sequence {k}, request {i}");
        }
    }
}

/// A model that cannot load: its config's sequence_batching is edited by `edits`; returns the load's error.
async fn load_error(edits: &[(&str, &str)]) -> String {
    let dir = tempfile::tempdir().expect("tempdir");
    copy_example(dir.path(), "simple_accumulator", "broken", edits);
    let s = explicit(dir.path(), &[]);
    let (status, b) = post_json(&format!("{}/v2/repository/models/broken/load", s.http), &json!({})).await;
    assert_eq!(status, 400, "{b}");
    b["error"].as_str().unwrap_or_default().to_string()
}

#[tokio::test]
async fn inconsistent_sequence_configs_fail_to_load_naming_the_field() {
    let err = load_error(&[("int32_false_true: [ 0, 1 ]", "int32_false_true: [ 1 ]")]).await;
    assert!(
        err.contains("sequence_batching.control_input 'START': int32_false_true must hold two values"),
        "{err}"
    );
    let err = load_error(&[("input_name: \"ACC_IN\"", "input_name: \"NOT_THERE\"")]).await;
    assert!(
        err.contains("sequence_batching input 'NOT_THERE' is not an input of the model file"),
        "{err}"
    );
    let err = load_error(&[(
        "      dims: [ 1 ]\n      initial_state",
        "      dims: [ -1 ]\n      initial_state",
    )])
    .await;
    assert!(
        err.contains("sequence_batching.state 'ACC_IN': dims must be given"),
        "{err}"
    );
}

#[tokio::test]
async fn malformed_sequence_parameters_and_batches_are_refused_with_a_reason() {
    let url = format!("{}/v2/models/simple_accumulator/infer", server().http);
    let input = json!([{"name": "INPUT", "shape": [1, 1], "datatype": "INT32", "data": [1]}]);
    let cases = [
        (
            json!({"sequence_id": -3, "sequence_start": true}),
            "parameter 'sequence_id' must be a non-negative integer or a string",
        ),
        (
            json!({"sequence_id": 1.5, "sequence_start": true}),
            "parameter 'sequence_id' must be a non-negative integer or a string",
        ),
        (
            json!({"sequence_id": 5, "sequence_start": "yes"}),
            "parameter 'sequence_start' must be a bool",
        ),
        (
            json!({"sequence_id": 5, "sequence_start": true, "sequence_end": 1}),
            "parameter 'sequence_end' must be a bool",
        ),
    ];
    for (parameters, expected) in cases {
        let (status, b) = post_json(&url, &json!({"inputs": input, "parameters": parameters})).await;
        assert_eq!(status, 400, "{parameters}");
        assert!(
            b["error"].as_str().unwrap_or_default().contains(expected),
            "{parameters}: {b}"
        );
    }
    let two_rows = json!({
        "inputs": [{"name": "INPUT", "shape": [2, 1], "datatype": "INT32", "data": [1, 2]}],
        "parameters": {"sequence_id": 5, "sequence_start": true},
    });
    let (status, b) = post_json(&url, &two_rows).await;
    assert_eq!(status, 400);
    assert_eq!(
        b["error"],
        "inference request to sequence model 'simple_accumulator' must have batch size 1, got 2"
    );
    // A numeric CORRID cannot carry a string id.
    let (status, b) = send("sequence_controls", json!("not-a-number"), 1, true, true).await;
    assert_eq!(status, 400);
    assert!(
        b["error"].as_str().unwrap_or_default().contains("must be an integer"),
        "{b}"
    );
}
