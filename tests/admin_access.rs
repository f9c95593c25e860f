//! Who may change what a server serves. With `--admin-token`, admin requests (load, unload, traffic changes)
//! need the bearer token from anywhere; without one they are accepted only from loopback clients, unless
//! `--allow-remote-admin true` opens them to a trusted network. The server says which at start, and logs every
//! admin action with the client it came from.
mod common;

use common::*;
use inferd::proto::{RepositoryModelLoadRequest, RepositoryModelUnloadRequest};
use serde_json::{json, Value};
use tonic::Code;

/// A server on every interface, in explicit mode with `simple` loaded, and its addresses as a client on
/// another host of the network would reach them.
fn reachable_server(extra: &[&str]) -> (tempfile::TempDir, TestServer, TestServer) {
    let repo = tempfile::tempdir().unwrap();
    copy_example(repo.path(), "simple", "simple", &[]);
    let mut a = vec![
        "--model-repository",
        path(repo.path()),
        "--model-control-mode",
        "explicit",
        "--load-model",
        "simple",
    ];
    a.extend_from_slice(extra);
    let mut a = args(&a);
    let everywhere: std::net::IpAddr = "0.0.0.0".parse().unwrap();
    (a.http_address, a.grpc_address) = (everywhere, everywhere);
    let local = spawn(a).expect("server starts");
    let ip = non_loopback_ip();
    let port = |url: &str| url.rsplit(':').next().unwrap().to_string();
    let remote = TestServer {
        http: format!("http://{ip}:{}", port(&local.http)),
        grpc: format!("http://{ip}:{}", port(&local.grpc)),
        metrics: local.metrics.clone(),
    };
    (repo, local, remote)
}

async fn put_traffic(s: &TestServer, policy: &Value) -> (u16, Value) {
    let resp = http()
        .put(format!("{}/v2/models/simple/traffic", s.http))
        .json(policy)
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

fn names_the_token(v: &Value) -> bool {
    v["error"].as_str().is_some_and(|e| e.contains("--admin-token"))
}

#[tokio::test]
async fn without_a_token_admin_requests_are_accepted_only_from_loopback_clients() {
    let (_repo, local, remote) = reachable_server(&[]);
    let canary = json!({"labels": {"canary": 1}});
    // From another host: refused, naming the flag, and nothing changes.
    let (status, v) = put_traffic(&remote, &canary).await;
    assert_eq!(status, 401, "{v}");
    assert!(names_the_token(&v), "{v}");
    assert_eq!(
        get(&format!("{}/v2/models/simple/traffic", local.http)).await.1,
        json!({"labels": {}, "weights": {}})
    );
    for action in ["load", "unload"] {
        let (status, v) = post_json(
            &format!("{}/v2/repository/models/simple/{action}", remote.http),
            &json!({}),
        )
        .await;
        assert_eq!(status, 401, "{action}: {v}");
        assert!(names_the_token(&v), "{v}");
    }
    let mut client = grpc(&remote).await;
    let err = client
        .repository_model_unload(RepositoryModelUnloadRequest {
            model_name: "simple".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);
    assert!(err.message().contains("--admin-token"), "{err:?}");
    let err = client
        .repository_model_load(RepositoryModelLoadRequest {
            model_name: "simple".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);
    // What is not admin still serves everyone.
    assert_eq!(
        post_json(&format!("{}/v2/models/simple/infer", remote.http), &simple_body())
            .await
            .0,
        200
    );
    assert_eq!(get(&format!("{}/v2/models/simple/traffic", remote.http)).await.0, 200);
    assert_eq!(
        post_json(&format!("{}/v2/repository/index", remote.http), &json!({}))
            .await
            .0,
        200
    );
    // From this host, admin requests are accepted.
    assert_eq!(put_traffic(&local, &canary).await.0, 200);
    assert_eq!(
        post_json(&format!("{}/v2/repository/models/simple/load", local.http), &json!({}))
            .await
            .0,
        200
    );
    let mut client = grpc(&local).await;
    client
        .repository_model_unload(RepositoryModelUnloadRequest {
            model_name: "simple".into(),
            ..Default::default()
        })
        .await
        .expect("unload from loopback");
}

#[tokio::test]
async fn allow_remote_admin_opens_admin_requests_to_a_trusted_network() {
    let (_repo, _local, remote) = reachable_server(&["--allow-remote-admin", "true"]);
    assert_eq!(put_traffic(&remote, &json!({"labels": {"canary": 1}})).await.0, 200);
    let (status, v) = post_json(
        &format!("{}/v2/repository/models/simple/unload", remote.http),
        &json!({}),
    )
    .await;
    assert_eq!(status, 200, "{v}");
}

#[tokio::test]
async fn a_token_is_needed_from_loopback_too() {
    let (_repo, local, remote) = reachable_server(&["--admin-token", "s3cret"]);
    for s in [&local, &remote] {
        assert_eq!(put_traffic(s, &json!({})).await.0, 401);
        let resp = http()
            .put(format!("{}/v2/models/simple/traffic", s.http))
            .bearer_auth("s3cret")
            .json(&json!({}))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status().as_u16(), 200);
    }
}

fn message(line: &Value) -> &str {
    line["fields"]["message"].as_str().unwrap_or_default()
}

#[test]
fn the_server_says_at_start_who_may_send_admin_requests_and_logs_each_one() {
    let models = root().join("models");
    let mut p = spawn_process(&["--model-repository", path(&models)]);
    let said = p
        .startup
        .iter()
        .find(|l| message(l).contains("admin requests"))
        .map(|l| message(l).to_string())
        .expect("a start-up line about admin requests");
    assert!(
        said.contains("loopback") && said.contains("--admin-token") && said.contains("--allow-remote-admin"),
        "{said}"
    );
    let rt = tokio::runtime::Runtime::new().unwrap();
    let status = rt.block_on(async {
        let resp = http()
            .put(format!("{}/v2/models/simple/traffic", p.http))
            .json(&json!({"labels": {"stable": 1}}))
            .send()
            .await
            .unwrap();
        resp.status().as_u16()
    });
    assert_eq!(status, 200);
    let _ = p.child.kill();
    let logged = p
        .lines
        .map_while(Result::ok)
        .filter_map(|l| serde_json::from_str::<Value>(&l).ok())
        .find(|l| message(l).contains("traffic policy"))
        .expect("the traffic change is logged");
    let fields = &logged["fields"];
    assert_eq!(fields["model"], "simple", "{logged}");
    assert!(
        fields["client"].as_str().is_some_and(|c| c.starts_with("127.0.0.1:")),
        "{logged}"
    );
}
