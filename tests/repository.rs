//! The model repository through a real server: Triton's layout, version policies, explicit loading, and
//! models that fail to load being reported while the rest serve.
mod common;

use std::fs;
use std::path::Path;

use common::*;
use serde_json::json;

fn simple_onnx() -> Vec<u8> {
    fs::read(root().join("models/simple/1/model.onnx")).expect("example model")
}

fn simple_config(name: &str, extra: &str) -> String {
    let cfg = fs::read_to_string(root().join("models/simple/config.pbtxt")).expect("example config");
    format!(
        "{}\n{extra}\n",
        cfg.replace("name: \"simple\"", &format!("name: \"{name}\""))
    )
}

fn write(dir: &Path, rel: &str, contents: impl AsRef<[u8]>) {
    let p = dir.join(rel);
    fs::create_dir_all(p.parent().unwrap()).unwrap();
    fs::write(p, contents).unwrap();
}

/// A repository with a good model, a corrupt model file, a config that does not parse, and a model with
/// several versions under a `latest { num_versions: 2 }` policy.
fn mixed_repository() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write(d, "good/config.pbtxt", simple_config("good", ""));
    write(d, "good/1/model.onnx", simple_onnx());
    write(d, "corrupt/config.pbtxt", simple_config("corrupt", ""));
    write(d, "corrupt/1/model.onnx", b"this is not an onnx file");
    write(
        d,
        "badconfig/config.pbtxt",
        "name: \"badconfig\"\nmax_batch_size: eight\n",
    );
    write(d, "badconfig/1/model.onnx", simple_onnx());
    write(
        d,
        "versioned/config.pbtxt",
        simple_config("versioned", "version_policy: { latest: { num_versions: 2 } }"),
    );
    for v in ["1", "2", "3"] {
        write(d, &format!("versioned/{v}/model.onnx"), simple_onnx());
    }
    write(
        d,
        "every/config.pbtxt",
        simple_config("every", "version_policy: { all: {} }"),
    );
    write(
        d,
        "specific/config.pbtxt",
        simple_config("specific", "version_policy: { specific: { versions: [1, 3] } }"),
    );
    for v in ["1", "2", "3"] {
        write(d, &format!("every/{v}/model.onnx"), simple_onnx());
        write(d, &format!("specific/{v}/model.onnx"), simple_onnx());
    }
    dir
}

/// A server of one repository that reports ready even while some of its models have failed.
fn serve_lenient(repo: &Path) -> TestServer {
    spawn(args(&["--model-repository", path(repo), "--strict-readiness", "false"])).unwrap()
}

/// Why a server with these flags refuses to start.
fn start_error(flags: &[&str]) -> anyhow::Error {
    spawn(args(flags)).err().expect("start fails")
}

fn infer_body() -> serde_json::Value {
    let (a, b) = simple_inputs(1);
    json!({"inputs": [
        {"name": "INPUT0", "shape": [1, 16], "datatype": "INT32", "data": a},
        {"name": "INPUT1", "shape": [1, 16], "datatype": "INT32", "data": b},
    ]})
}

#[tokio::test]
async fn failed_models_are_reported_with_their_reason_and_the_rest_serve() {
    let repo = mixed_repository();
    let s = serve_lenient(repo.path());
    let (status, _) = post_json(&format!("{}/v2/models/good/infer", s.http), &infer_body()).await;
    assert_eq!(status, 200, "a good model serves beside broken ones");
    assert_eq!(
        get(&format!("{}/v2/health/ready", s.http)).await.0,
        200,
        "not strict: ready with failed models"
    );

    let (status, resp) = post_json(&format!("{}/v2/models/corrupt/infer", s.http), &infer_body()).await;
    assert_eq!(status, 503);
    let msg = resp["error"].as_str().unwrap();
    assert!(msg.contains("corrupt") && msg.contains("not ready"), "{msg}");
    assert_eq!(get(&format!("{}/v2/models/corrupt/ready", s.http)).await.0, 503);

    let (status, resp) = post_json(&format!("{}/v2/models/badconfig/infer", s.http), &infer_body()).await;
    assert_eq!(status, 503);
    assert!(resp["error"].as_str().unwrap().contains("config.pbtxt"), "{resp}");

    let mut c = grpc(&s).await;
    let req = inferd::proto::ModelMetadataRequest {
        name: "corrupt".into(),
        version: String::new(),
    };
    assert_eq!(
        c.model_metadata(req).await.unwrap_err().code(),
        tonic::Code::Unavailable
    );
}

#[tokio::test]
async fn strict_readiness_reports_not_ready_while_a_model_has_failed() {
    let repo = mixed_repository();
    let s = spawn(args(&["--model-repository", path(repo.path())])).unwrap();
    assert_eq!(get(&format!("{}/v2/health/ready", s.http)).await.0, 503);
    assert_eq!(get(&format!("{}/v2/health/live", s.http)).await.0, 200);
    let mut c = grpc(&s).await;
    assert!(
        !c.server_ready(inferd::proto::ServerReadyRequest {})
            .await
            .unwrap()
            .into_inner()
            .ready
    );
}

#[tokio::test]
async fn version_policies_choose_the_versions_that_load() {
    let repo = mixed_repository();
    let s = serve_lenient(repo.path());
    let versions = |md: serde_json::Value| md["versions"].clone();
    assert_eq!(
        versions(get(&format!("{}/v2/models/versioned", s.http)).await.1),
        json!(["2", "3"])
    );
    assert_eq!(
        versions(get(&format!("{}/v2/models/every", s.http)).await.1),
        json!(["1", "2", "3"])
    );
    assert_eq!(
        versions(get(&format!("{}/v2/models/specific", s.http)).await.1),
        json!(["1", "3"])
    );

    // No version named: the newest serves. A version the policy left out is unknown.
    let (status, resp) = post_json(&format!("{}/v2/models/versioned/infer", s.http), &infer_body()).await;
    assert_eq!(status, 200);
    assert_eq!(resp["model_version"], "3");
    let (status, resp) = post_json(
        &format!("{}/v2/models/versioned/versions/2/infer", s.http),
        &infer_body(),
    )
    .await;
    assert_eq!((status, resp["model_version"].clone()), (200, json!("2")));
    let (status, resp) = post_json(
        &format!("{}/v2/models/versioned/versions/1/infer", s.http),
        &infer_body(),
    )
    .await;
    assert_eq!(status, 404);
    assert!(resp["error"].as_str().unwrap().starts_with("Request for unknown model"));
    assert_eq!(
        get(&format!("{}/v2/models/versioned/versions/1/ready", s.http)).await.0,
        404
    );

    // Statistics cover every loaded version.
    let (_, stats) = get(&format!("{}/v2/models/versioned/stats", s.http)).await;
    let listed: Vec<&str> = stats["model_stats"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["version"].as_str().unwrap())
        .collect();
    assert_eq!(listed, vec!["2", "3"]);
}

#[tokio::test]
async fn explicit_mode_loads_only_the_named_models() {
    let repo = mixed_repository();
    let s = spawn(args(&[
        "--model-repository",
        path(repo.path()),
        "--model-control-mode",
        "explicit",
        "--load-model",
        "good",
    ]))
    .unwrap();
    assert_eq!(
        get(&format!("{}/v2/health/ready", s.http)).await.0,
        200,
        "only healthy models were asked for"
    );
    assert_eq!(get(&format!("{}/v2/models/good/ready", s.http)).await.0, 200);
    assert_eq!(get(&format!("{}/v2/models/versioned", s.http)).await.0, 404);
}

#[test]
fn explicit_mode_refuses_a_model_that_is_not_in_the_repository() {
    let repo = mixed_repository();
    let err = start_error(&[
        "--model-repository",
        path(repo.path()),
        "--model-control-mode",
        "explicit",
        "--load-model",
        "ghost",
    ]);
    assert!(err.to_string().contains("ghost"), "{err}");
}

#[test]
fn exit_on_error_refuses_to_start_with_a_failed_model() {
    let repo = mixed_repository();
    let err = start_error(&["--model-repository", path(repo.path()), "--exit-on-error", "true"]);
    assert!(err.to_string().contains("failed to load"), "{err}");
}

#[test]
fn a_missing_onnx_runtime_library_is_reported_with_what_to_do() {
    let repo = mixed_repository();
    let err = start_error(&[
        "--model-repository",
        path(repo.path()),
        "--onnxruntime-library",
        "/nonexistent/libonnxruntime.so.1.31.1",
    ]);
    assert!(
        err.to_string().contains("/nonexistent/libonnxruntime.so.1.31.1"),
        "{err}"
    );
}

#[test]
fn a_missing_repository_is_an_error() {
    let err = start_error(&["--model-repository", "/nonexistent/repo"]);
    assert!(err.to_string().contains("/nonexistent/repo"), "{err}");
}

#[tokio::test]
async fn the_same_model_in_two_repositories_is_reported() {
    let (a, b) = (mixed_repository(), tempfile::tempdir().unwrap());
    write(b.path(), "good/config.pbtxt", simple_config("good", ""));
    write(b.path(), "good/1/model.onnx", simple_onnx());
    let s = spawn(args(&[
        "--model-repository",
        path(a.path()),
        "--model-repository",
        path(b.path()),
        "--strict-readiness",
        "false",
    ]))
    .unwrap();
    let (status, resp) = post_json(&format!("{}/v2/models/good/infer", s.http), &infer_body()).await;
    assert_eq!(status, 503);
    assert!(
        resp["error"].as_str().unwrap().contains("more than one repository"),
        "{resp}"
    );
}

#[tokio::test]
async fn a_config_without_io_is_completed_and_a_mismatched_name_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "partial/config.pbtxt",
        "max_batch_size: 2\ninstance_group [ { count: 2 kind: KIND_CPU } ]\n",
    );
    write(dir.path(), "partial/1/model.onnx", simple_onnx());
    write(dir.path(), "renamed/config.pbtxt", simple_config("other", ""));
    write(dir.path(), "renamed/1/model.onnx", simple_onnx());
    let s = serve_lenient(dir.path());
    let (_, cfg) = get(&format!("{}/v2/models/partial/config", s.http)).await;
    assert_eq!(cfg["max_batch_size"], 2, "the config's own batch size is kept");
    assert_eq!(cfg["input"][0]["dims"], json!([16]));
    assert_eq!(cfg["instance_group"][0]["count"], 2);
    let (status, _) = post_json(&format!("{}/v2/models/partial/infer", s.http), &infer_body()).await;
    assert_eq!(status, 200);
    let (status, resp) = post_json(&format!("{}/v2/models/renamed/infer", s.http), &infer_body()).await;
    assert_eq!(status, 503);
    assert!(
        resp["error"]
            .as_str()
            .unwrap()
            .contains("unexpected directory name 'renamed' for model 'other', directory name must equal model name"),
        "{resp}"
    );
}
