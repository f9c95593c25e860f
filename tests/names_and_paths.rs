//! What a request names is checked before it reaches the filesystem: a model name wherever one enters (every
//! REST path and gRPC field, the repository scan, the poll watcher, `--load-model`), and every path a load
//! request derives (`file:` overrides, `default_model_filename`, `label_filename`), which must stay inside the
//! model's own folder. A bad one is a 400 / INVALID_ARGUMENT naming the rule, never a 5xx, and nothing is
//! written.
mod common;

use std::path::Path;

use base64::Engine;
use common::*;
use inferd::proto::{
    model_infer_request::InferInputTensor, model_repository_parameter::ParameterChoice, ModelConfigRequest,
    ModelInferRequest, ModelMetadataRequest, ModelReadyRequest, ModelRepositoryParameter, ModelStatisticsRequest,
    RepositoryModelLoadRequest, RepositoryModelUnloadRequest,
};
use serde_json::{json, Value};
use tonic::Code;

/// Bad names, each with the words of the rule its refusal must name.
fn bad_names() -> Vec<(String, &'static str)> {
    vec![
        (".".into(), "must not be '.' or '..'"),
        ("..".into(), "must not be '.' or '..'"),
        ("a/b".into(), "must not contain '/' or '\\'"),
        ("../../etc".into(), "must not contain '/' or '\\'"),
        ("/abs".into(), "must not contain '/' or '\\'"),
        ("a\\b".into(), "must not contain '/' or '\\'"),
        ("a\0b".into(), "NUL or control characters"),
        ("a\nb".into(), "NUL or control characters"),
        ("a\u{7f}b".into(), "NUL or control characters"),
        ("x".repeat(10_000), "at most 255 bytes"),
        ("é".repeat(128), "at most 255 bytes"),
    ]
}

/// A name as one REST path segment (slashes and every other byte outside a plain name percent-encoded).
fn segment(name: &str) -> String {
    name.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'_' | b'-' | b'.' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn explicit_server(repo: &Path) -> TestServer {
    copy_example(repo, "simple", "simple", &[]);
    explicit(repo, &["simple"])
}

fn simple_config(extra: Value) -> Value {
    let mut config = json!({
        "name": "simple", "platform": "onnxruntime_onnx", "max_batch_size": 8,
        "input": [
            {"name": "INPUT0", "data_type": "TYPE_INT32", "dims": [16]},
            {"name": "INPUT1", "data_type": "TYPE_INT32", "dims": [16]}
        ],
        "output": [
            {"name": "OUTPUT0", "data_type": "TYPE_INT32", "dims": [16]},
            {"name": "OUTPUT1", "data_type": "TYPE_INT32", "dims": [16]}
        ]
    });
    if let (Some(c), Some(e)) = (config.as_object_mut(), extra.as_object()) {
        for (k, v) in e {
            c.insert(k.clone(), v.clone());
        }
    }
    config
}

fn simple_onnx_base64() -> String {
    let bytes = std::fs::read(root().join("models/simple/1/model.onnx")).unwrap();
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn assert_refused(status: u16, body: &Value, rule: &str, what: &str) {
    assert_eq!(status, 400, "{what}: {body}");
    let msg = body["error"]
        .as_str()
        .unwrap_or_else(|| panic!("{what}: no JSON error in {body}"));
    assert!(msg.contains(rule), "{what}: '{msg}' does not name the rule '{rule}'");
}

#[tokio::test]
async fn a_load_whose_name_would_leave_the_repository_is_refused_and_writes_nothing() {
    let repo = tempfile::tempdir().unwrap();
    let s = explicit_server(repo.path());
    let tmp = std::env::temp_dir();
    let pid = std::process::id();
    // Where the override files landed before names were checked: a relative name climbs out of the staging
    // folder to the root and back down into the temporary folder; an absolute one lands where it says.
    let climbed = tmp.join(format!("inferd-escaped-relative-{pid}"));
    let absolute = tmp.join(format!("inferd-escaped-absolute-{pid}"));
    let relative_name = format!("{}{}", "../".repeat(16), climbed.strip_prefix("/").unwrap().display());
    let absolute_name = absolute.display().to_string();
    for (name, target) in [(&relative_name, &climbed), (&absolute_name, &absolute)] {
        let _ = std::fs::remove_dir_all(target);
        let body = json!({"parameters": {
            "config": simple_config(json!({})).to_string(),
            "file:1/model.onnx": simple_onnx_base64(),
        }});
        let (status, v) = raw_http(
            &s.http,
            "POST",
            &format!("/v2/repository/models/{}/load", segment(name)),
            &body.to_string(),
        )
        .await;
        let written = target.exists();
        let _ = std::fs::remove_dir_all(target);
        assert!(
            !written,
            "the load wrote {} outside its staging folder",
            target.display()
        );
        assert_refused(status, &v, "must not contain '/' or '\\'", name);
    }
    // The same over gRPC.
    let mut client = grpc(&s).await;
    let mut parameters = std::collections::HashMap::new();
    parameters.insert(
        "config".to_string(),
        ModelRepositoryParameter {
            parameter_choice: Some(ParameterChoice::StringParam(simple_config(json!({})).to_string())),
        },
    );
    parameters.insert(
        "file:1/model.onnx".to_string(),
        ModelRepositoryParameter {
            parameter_choice: Some(ParameterChoice::BytesParam(
                std::fs::read(root().join("models/simple/1/model.onnx")).unwrap().into(),
            )),
        },
    );
    let err = client
        .repository_model_load(RepositoryModelLoadRequest {
            model_name: absolute_name.clone(),
            parameters,
            ..Default::default()
        })
        .await
        .unwrap_err();
    let written = absolute.exists();
    let _ = std::fs::remove_dir_all(&absolute);
    assert!(!written, "the gRPC load wrote outside its staging folder");
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    // Nothing of it is listed.
    let (_, index) = post_json(&format!("{}/v2/repository/index", s.http), &json!({})).await;
    assert_eq!(index, json!([{"name": "simple", "version": "1", "state": "READY"}]));
}

#[tokio::test]
async fn every_rest_route_that_names_a_model_refuses_a_bad_name_with_the_rule() {
    let s = server();
    for (name, rule) in bad_names() {
        let m = segment(&name);
        let routes = [
            ("GET", format!("/v2/models/{m}"), String::new()),
            ("GET", format!("/v2/models/{m}/versions/1"), String::new()),
            ("GET", format!("/v2/models/{m}/ready"), String::new()),
            ("GET", format!("/v2/models/{m}/config"), String::new()),
            ("GET", format!("/v2/models/{m}/stats"), String::new()),
            (
                "POST",
                format!("/v2/models/{m}/infer"),
                json!({"inputs": []}).to_string(),
            ),
            (
                "POST",
                format!("/v2/models/{m}/versions/1/infer"),
                json!({"inputs": []}).to_string(),
            ),
            ("GET", format!("/v2/models/{m}/traffic"), String::new()),
            ("PUT", format!("/v2/models/{m}/traffic"), json!({}).to_string()),
            ("POST", format!("/v2/repository/models/{m}/load"), String::new()),
            ("POST", format!("/v2/repository/models/{m}/unload"), String::new()),
        ];
        for (method, route, body) in routes {
            let (status, v) = raw_http(&s.http, method, &route, &body).await;
            let shown: String = route.chars().take(80).collect();
            assert_refused(status, &v, rule, &format!("{method} {shown}"));
        }
    }
    // A route whose model segment is empty matches no route; it is refused for the name all the same.
    for (method, route) in [
        ("POST", "/v2/models//infer"),
        ("GET", "/v2/models//ready"),
        ("GET", "/v2/models//versions/1"),
        ("POST", "/v2/repository/models//load"),
    ] {
        let (status, v) = raw_http(&s.http, method, route, "").await;
        assert_refused(status, &v, "must not be empty", route);
    }
    assert_eq!(raw_http(&s.http, "GET", "/v2/nothing/here", "").await.0, 404);
}

#[tokio::test]
async fn every_grpc_call_that_names_a_model_refuses_a_bad_name_with_the_rule() {
    let s = server();
    let mut client = grpc(s).await;
    let mut names = bad_names();
    // An empty name means "every model" only to the statistics call.
    names.push((String::new(), "must not be empty"));
    for (name, rule) in names {
        let version = || String::new();
        let infer = ModelInferRequest {
            model_name: name.clone(),
            inputs: vec![InferInputTensor {
                name: "INPUT0".into(),
                datatype: "INT32".into(),
                shape: vec![1, 16],
                ..Default::default()
            }],
            raw_input_contents: vec![vec![0u8; 64].into()],
            ..Default::default()
        };
        let mut errors = vec![
            (
                "ModelReady",
                client
                    .model_ready(ModelReadyRequest {
                        name: name.clone(),
                        version: version(),
                    })
                    .await
                    .map(|_| ()),
            ),
            (
                "ModelMetadata",
                client
                    .model_metadata(ModelMetadataRequest {
                        name: name.clone(),
                        version: version(),
                    })
                    .await
                    .map(|_| ()),
            ),
            (
                "ModelConfig",
                client
                    .model_config(ModelConfigRequest {
                        name: name.clone(),
                        version: version(),
                    })
                    .await
                    .map(|_| ()),
            ),
            ("ModelInfer", client.model_infer(infer.clone()).await.map(|_| ())),
            (
                "RepositoryModelLoad",
                client
                    .repository_model_load(RepositoryModelLoadRequest {
                        model_name: name.clone(),
                        ..Default::default()
                    })
                    .await
                    .map(|_| ()),
            ),
            (
                "RepositoryModelUnload",
                client
                    .repository_model_unload(RepositoryModelUnloadRequest {
                        model_name: name.clone(),
                        ..Default::default()
                    })
                    .await
                    .map(|_| ()),
            ),
        ];
        if !name.is_empty() {
            errors.push((
                "ModelStatistics",
                client
                    .model_statistics(ModelStatisticsRequest {
                        name: name.clone(),
                        version: version(),
                    })
                    .await
                    .map(|_| ()),
            ));
        }
        for (call, result) in errors {
            let err = result.expect_err(call);
            assert_eq!(err.code(), Code::InvalidArgument, "{call} {name:.40?}: {err:?}");
            assert!(
                err.message().contains(rule),
                "{call}: '{}' does not name '{rule}'",
                err.message()
            );
        }
        // A streamed request gets the same answer, and the stream stays open.
        let outbound = futures::stream::iter(vec![infer]);
        let mut inbound = client.model_stream_infer(outbound).await.unwrap().into_inner();
        let answer = inbound.message().await.unwrap().expect("an answer");
        assert!(answer.error_message.contains(rule), "stream: {}", answer.error_message);
    }
}

/// A repository holding `simple` and, beside it, model folders whose names no request could use.
fn repository_with_bad_folders(repo: &Path, bad: &[&str]) {
    copy_example(repo, "simple", "simple", &[]);
    for name in bad {
        copy_example(repo, "simple", name, &[]);
    }
}

fn index_names(index: &Value) -> Vec<String> {
    index
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["name"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test]
async fn the_repository_scan_and_the_poll_watcher_pass_over_folders_with_bad_names() {
    let repo = tempfile::tempdir().unwrap();
    repository_with_bad_folders(repo.path(), &["back\\slash", "bell\u{7}"]);
    let s = spawn(args(&[
        "--model-repository",
        path(repo.path()),
        "--model-control-mode",
        "poll",
        "--repository-poll-secs",
        "1",
    ]))
    .expect("the server starts and serves the good model");
    let (status, index) = post_json(&format!("{}/v2/repository/index", s.http), &json!({})).await;
    assert_eq!(status, 200);
    assert_eq!(index_names(&index), vec!["simple"], "{index}");
    // Added while polling: the good one is loaded, the bad one never appears.
    copy_example(repo.path(), "simple", "tab\tname", &[]);
    copy_example(repo.path(), "simple", "later", &[]);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let (_, index) = post_json(&format!("{}/v2/repository/index", s.http), &json!({})).await;
        let names = index_names(&index);
        assert!(names.iter().all(|n| n == "simple" || n == "later"), "{index}");
        if names.contains(&"later".to_string()) {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the watcher never loaded 'later'");
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}

#[test]
fn a_bad_name_given_to_load_model_stops_the_start_with_the_rule() {
    let repo = tempfile::tempdir().unwrap();
    copy_example(repo.path(), "simple", "simple", &[]);
    let err = spawn(args(&[
        "--model-repository",
        path(repo.path()),
        "--model-control-mode",
        "explicit",
        "--load-model",
        "../simple",
    ]))
    .err()
    .expect("the start is refused");
    assert!(err.to_string().contains("must not contain '/' or '\\'"), "{err}");
}

#[tokio::test]
async fn a_config_override_must_carry_the_model_name_or_none() {
    let repo = tempfile::tempdir().unwrap();
    let s = explicit_server(repo.path());
    let load = |config: Value| {
        let url = format!("{}/v2/repository/models/simple/load", s.http);
        async move { post_json(&url, &json!({"parameters": {"config": config.to_string()}})).await }
    };
    let (status, v) = load(simple_config(json!({"name": "other"}))).await;
    assert_refused(
        status,
        &v,
        "failed to load 'simple': unexpected directory name 'simple' for model 'other', directory name must equal model name",
        "a config named otherwise",
    );
    let mut nameless = simple_config(json!({}));
    nameless.as_object_mut().unwrap().remove("name");
    let (status, v) = load(nameless).await;
    assert_eq!(status, 200, "{v}");
    let (_, md) = get(&format!("{}/v2/models/simple", s.http)).await;
    assert_eq!(md["name"], "simple", "{md}");
    let (_, cfg) = get(&format!("{}/v2/models/simple/config", s.http)).await;
    assert_eq!(cfg["name"], "simple", "{cfg}");
}

/// A load request's answer with the path it named taken out, so two answers can be compared.
fn without(v: &Value, named: &str) -> String {
    v["error"].as_str().unwrap_or_default().replace(named, "<path>")
}

#[tokio::test]
async fn paths_a_load_request_derives_must_stay_inside_the_model_folder() {
    let repo = tempfile::tempdir().unwrap();
    let s = explicit_server(repo.path());
    let load = |body: Value| {
        let url = format!("{}/v2/repository/models/simple/load", s.http);
        async move { post_json(&url, &body).await }
    };
    let with_config = |extra: Value| json!({"parameters": {"config": simple_config(extra).to_string()}});
    // A file outside, one that does not exist, and an absolute path: refused alike, so the answer does not
    // tell which files exist outside the model's folder.
    let outside = "../../../../../../../../etc/passwd";
    let missing = "../../../../../../../../etc/no-such-file-here";
    let mut answers = Vec::new();
    for named in [outside, missing, "/etc/passwd", "1/../../../etc/passwd"] {
        let (status, v) = load(with_config(json!({"default_model_filename": named}))).await;
        assert_refused(status, &v, "default_model_filename", named);
        assert!(
            v["error"]
                .as_str()
                .unwrap()
                .contains("must be a file name inside the model's folder"),
            "{v}"
        );
        answers.push(without(&v, named));
    }
    assert!(answers.windows(2).all(|w| w[0] == w[1]), "{answers:#?}");
    // The output label file the classification extension reads.
    let labelled = json!({"output": [
        {"name": "OUTPUT0", "data_type": "TYPE_INT32", "dims": [16], "label_filename": outside},
        {"name": "OUTPUT1", "data_type": "TYPE_INT32", "dims": [16]}
    ]});
    let (status, v) = load(with_config(labelled)).await;
    assert_refused(status, &v, "label_filename", "label_filename");
    // Override files: `<version>/<path>` inside the staging folder only.
    for file in [
        "1/../../escape.onnx",
        "../1/model.onnx",
        "/1/model.onnx",
        "x/model.onnx",
        "1",
    ] {
        let body = json!({"parameters": {
            "config": simple_config(json!({})).to_string(),
            format!("file:{file}"): simple_onnx_base64(),
        }});
        let (status, v) = load(body).await;
        assert_refused(status, &v, "must be '<version>/<file name>'", file);
    }
    // Through all of it the model kept serving.
    assert_eq!(
        post_json(&format!("{}/v2/models/simple/infer", s.http), &simple_body())
            .await
            .0,
        200
    );
}
