//! Whatever bytes arrive as an infer body, the server answers: a 4xx with a JSON error, or 200 with the right
//! result. Never a 5xx, never silence. Checked with proptest against the real HTTP front-end, on `simple`
//! (OUTPUT0 = INPUT0 + INPUT1, OUTPUT1 = INPUT0 - INPUT1, INT32).
mod common;

use std::sync::OnceLock;
use std::time::Duration;

use proptest::prelude::*;
use serde_json::{json, Value};

/// A server with only `simple` loaded, on a runtime of its own; the properties run on another.
fn server() -> &'static str {
    static HTTP: OnceLock<String> = OnceLock::new();
    HTTP.get_or_init(|| {
        let models = common::root().join("models");
        let args = common::args(&[
            "--model-repository",
            common::path(&models),
            "--model-control-mode",
            "explicit",
            "--load-model",
            "simple",
        ]);
        common::spawn(args).expect("the test server starts").http
    })
}

fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime")
    })
}

struct Answer {
    status: u16,
    binary_header: Option<usize>,
    body: Vec<u8>,
}

/// Posts `body` (with the binary extension's header length when given); a hang fails the property.
fn post(body: Vec<u8>, header_length: Option<usize>) -> Answer {
    runtime().block_on(async {
        let url = format!("{}/v2/models/simple/infer", server());
        let answer = async {
            let resp = common::post_raw(&url, body, header_length).await;
            let status = resp.status().as_u16();
            let binary_header = resp
                .headers()
                .get("Inference-Header-Content-Length")
                .and_then(|v| v.to_str().ok()?.parse().ok());
            let body = resp.bytes().await.expect("the whole answer arrives").to_vec();
            Answer {
                status,
                binary_header,
                body,
            }
        };
        tokio::time::timeout(Duration::from_secs(20), answer)
            .await
            .expect("the server answers within 20 s")
    })
}

/// An input's values, flattened, when the body gives it as JSON integers (nested or flat).
fn json_ints(req: &Value, name: &str) -> Option<Vec<i64>> {
    fn flatten(v: &Value, out: &mut Vec<i64>) -> Option<()> {
        match v {
            Value::Array(items) => items.iter().try_for_each(|i| flatten(i, out)),
            other => {
                out.push(other.as_i64()?);
                Some(())
            }
        }
    }
    let input = req["inputs"].as_array()?.iter().find(|i| i["name"] == name)?;
    let mut out = Vec::new();
    flatten(&input["data"], &mut out)?;
    Some(out)
}

/// The property: 4xx with `{"error": "..."}`, or 200 with the sums and differences of what was sent.
fn check(body: &[u8], header_length: Option<usize>, answer: &Answer) -> Result<(), TestCaseError> {
    prop_assert!(
        (200..500).contains(&answer.status) && answer.status != 204,
        "status {} for body {:?}: {}",
        answer.status,
        String::from_utf8_lossy(body),
        String::from_utf8_lossy(&answer.body)
    );
    if answer.status != 200 {
        let error: Value = serde_json::from_slice(&answer.body)
            .map_err(|e| TestCaseError::fail(format!("a {} answer is not JSON: {e}", answer.status)))?;
        prop_assert!(
            error["error"].as_str().is_some_and(|m| !m.is_empty()),
            "no error message: {error}"
        );
        return Ok(());
    }
    // Accepted: only a JSON request (or the JSON header of a binary one) with integers can have been right.
    let json_part = header_length.map_or(body, |n| &body[..n.min(body.len())]);
    let req: Value = serde_json::from_slice(json_part)
        .map_err(|e| TestCaseError::fail(format!("200 for a request that is not JSON ({e})")))?;
    let (Some(a), Some(b)) = (json_ints(&req, "INPUT0"), json_ints(&req, "INPUT1")) else {
        // Binary tensor data: the fuzz targets and the datatype tests check those decoders; here, an
        // accepted body must at least carry the inputs.
        prop_assert!(
            header_length.is_some(),
            "200 without both inputs as JSON integers: {req}"
        );
        return Ok(());
    };
    let fits = |v: &[i64]| v.iter().all(|&x| i32::try_from(x).is_ok());
    prop_assert!(fits(&a) && fits(&b), "200 for INT32 values out of range: {req}");
    if answer.binary_header.is_some() {
        return Ok(()); // outputs asked for as binary: their decoding is the datatype tests' job
    }
    let resp: Value = serde_json::from_slice(&answer.body).map_err(|e| TestCaseError::fail(e.to_string()))?;
    for out in resp["outputs"].as_array().into_iter().flatten() {
        let got: Vec<i64> = out["data"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_i64)
            .collect();
        let want: Vec<i64> = a
            .iter()
            .zip(&b)
            .map(|(&x, &y)| {
                let (x, y) = (x as i32, y as i32);
                i64::from(if out["name"] == "OUTPUT0" {
                    x.wrapping_add(y)
                } else {
                    x.wrapping_sub(y)
                })
            })
            .collect();
        prop_assert_eq!(got, want, "wrong {} for {}", out["name"], req);
    }
    Ok(())
}

/// Well-formed requests the mutations start from.
fn valid_bodies() -> Vec<Vec<u8>> {
    let a: Vec<i32> = (0..16).collect();
    let b: Vec<i32> = (0..16).map(|x| 100 - x).collect();
    let (max, min) = ([i32::MAX; 16], [i32::MIN; 16]);
    let bodies = [
        json!({"inputs": [
            {"name": "INPUT0", "datatype": "INT32", "shape": [1, 16], "data": a},
            {"name": "INPUT1", "datatype": "INT32", "shape": [1, 16], "data": b}]}),
        json!({"id": "x", "inputs": [
            {"name": "INPUT0", "datatype": "INT32", "shape": [2, 16], "data": [a, a]},
            {"name": "INPUT1", "datatype": "INT32", "shape": [2, 16], "data": [b, b]}],
            "outputs": [{"name": "OUTPUT1"}]}),
        json!({"inputs": [
            {"name": "INPUT0", "datatype": "INT32", "shape": [1, 16], "data": max},
            {"name": "INPUT1", "datatype": "INT32", "shape": [1, 16], "data": min, "parameters": {}}],
            "parameters": {"priority": 1}}),
    ];
    bodies.iter().map(|b| serde_json::to_vec(b).expect("json")).collect()
}

#[derive(Debug, Clone)]
enum Mutation {
    Set(usize, u8),
    Delete(usize, usize),
    Insert(usize, Vec<u8>),
    Truncate(usize),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<usize>(), any::<u8>()).prop_map(|(i, b)| Mutation::Set(i, b)),
        (any::<usize>(), 1usize..16).prop_map(|(i, n)| Mutation::Delete(i, n)),
        (any::<usize>(), prop::collection::vec(any::<u8>(), 1..8)).prop_map(|(i, b)| Mutation::Insert(i, b)),
        // Digits, signs, brackets and quotes: the bytes that keep JSON almost valid.
        (any::<usize>(), prop::sample::select(b"0123456789-.e[]{},\":".to_vec()))
            .prop_map(|(i, b)| Mutation::Set(i, b)),
        any::<usize>().prop_map(Mutation::Truncate),
    ]
}

fn apply(mut body: Vec<u8>, mutations: &[Mutation]) -> Vec<u8> {
    for m in mutations {
        let at = |i: usize, len: usize| if len == 0 { 0 } else { i % len };
        match m {
            Mutation::Set(i, b) if !body.is_empty() => {
                let i = at(*i, body.len());
                body[i] = *b;
            }
            Mutation::Delete(i, n) if !body.is_empty() => {
                let i = at(*i, body.len());
                body.drain(i..(i + n).min(body.len()));
            }
            Mutation::Insert(i, bytes) => {
                let i = at(*i, body.len() + 1);
                body.splice(i..i, bytes.iter().copied());
            }
            Mutation::Truncate(i) => body.truncate(at(*i, body.len() + 1)),
            _ => {}
        }
    }
    body
}

/// JSON values of every kind, for the fields a request names.
fn any_json() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        (-3i64..20).prop_map(Value::from),
        any::<f64>().prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
        "[A-Z0-9_]{0,8}".prop_map(Value::from),
    ]
}

/// Requests shaped like the protocol's, with each field drawn from right, nearly right and wrong values.
fn structured_body() -> impl Strategy<Value = Vec<u8>> {
    let datatype = prop_oneof![
        Just(json!("INT32")),
        Just(json!("FP32")),
        Just(json!("BYTES")),
        Just(json!("INT64")),
        any_json()
    ];
    let dim = prop_oneof![Just(json!(1)), Just(json!(16)), Just(json!(2)), any_json()];
    let shape = prop_oneof![
        Just(json!([1, 16])),
        prop::collection::vec(dim, 0..4).prop_map(Value::from),
        any_json()
    ];
    let value = prop_oneof![(-50i64..50).prop_map(Value::from), any_json()];
    let data = prop_oneof![
        prop::collection::vec(value.clone(), 16).prop_map(Value::from),
        prop::collection::vec(value, 0..40).prop_map(Value::from),
        any_json()
    ];
    let name = prop_oneof![Just("INPUT0"), Just("INPUT1"), Just("OUTPUT0"), Just("")];
    let input = (name, datatype, shape, data).prop_map(
        |(name, datatype, shape, data)| json!({"name": name, "datatype": datatype, "shape": shape, "data": data}),
    );
    prop::collection::vec(input, 0..4)
        .prop_map(|inputs| serde_json::to_vec(&json!({ "inputs": inputs })).expect("json"))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1000, ..ProptestConfig::default() })]

    #[test]
    fn any_bytes_get_a_4xx_or_a_correct_result(
        body in prop::collection::vec(any::<u8>(), 0..2048),
        header_length in prop::option::of(0usize..2100),
    ) {
        let answer = post(body.clone(), header_length);
        check(&body, header_length, &answer)?;
    }

    #[test]
    fn mutated_requests_get_a_4xx_or_a_correct_result(
        base in prop::sample::select(valid_bodies()),
        mutations in prop::collection::vec(mutation(), 1..5),
    ) {
        let body = apply(base, &mutations);
        let answer = post(body.clone(), None);
        check(&body, None, &answer)?;
    }

    #[test]
    fn requests_with_wrong_fields_get_a_4xx_or_a_correct_result(body in structured_body()) {
        let answer = post(body.clone(), None);
        check(&body, None, &answer)?;
    }

    #[test]
    fn binary_requests_with_mangled_lengths_get_a_4xx_or_a_correct_result(
        declared in prop::collection::vec(0usize..80, 2),
        tensor_bytes in prop::collection::vec(any::<u8>(), 0..200),
        header_slack in -4isize..4,
    ) {
        let header = serde_json::to_vec(&json!({"inputs": [
            {"name": "INPUT0", "datatype": "INT32", "shape": [1, 16], "parameters": {"binary_data_size": declared[0]}},
            {"name": "INPUT1", "datatype": "INT32", "shape": [1, 16], "parameters": {"binary_data_size": declared[1]}},
        ]})).expect("json");
        let header_length = (header.len() as isize + header_slack).max(0) as usize;
        let mut body = header;
        body.extend_from_slice(&tensor_bytes);
        let answer = post(body.clone(), Some(header_length));
        check(&body, Some(header_length), &answer)?;
        let well_formed = header_slack == 0 && declared == [64, 64] && tensor_bytes.len() == 128;
        prop_assert_eq!(answer.status == 200, well_formed, "status {}", answer.status);
        if well_formed {
            let ints: Vec<i32> = tensor_bytes.chunks(4).map(|c| i32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
            let resp: Value = serde_json::from_slice(&answer.body).map_err(|e| TestCaseError::fail(e.to_string()))?;
            let sums: Vec<i64> = ints[..16].iter().zip(&ints[16..]).map(|(x, y)| i64::from(x.wrapping_add(*y))).collect();
            let output0 = resp["outputs"].as_array().into_iter().flatten().find(|o| o["name"] == "OUTPUT0");
            let got: Vec<i64> = output0.map(|o| o["data"].as_array().into_iter().flatten().filter_map(Value::as_i64).collect()).unwrap_or_default();
            prop_assert_eq!(got, sums);
        }
    }
}

/// The harness itself: a well-formed request passes the property (so a broken server could fail it).
#[test]
fn a_well_formed_request_gets_the_right_sums() {
    let body = valid_bodies().swap_remove(0);
    let answer = post(body.clone(), None);
    assert_eq!(answer.status, 200);
    check(&body, None, &answer).expect("a correct result");
}
