//! Shutting down: on SIGTERM the server stops taking work at once (not ready, listener closed, new requests
//! refused), answers every request it had already taken (running or queued), and exits 0.
mod common;

use std::time::{Duration, Instant};

use common::*;
use serde_json::json;

fn slow_body(ms: f32) -> serde_json::Value {
    json!({"inputs": [{"name": "INPUT0", "shape": [1, 1], "datatype": "FP32", "data": [ms]}]})
}

#[tokio::test]
async fn sigterm_drains_running_and_queued_requests_then_exits_zero() {
    let repo = root().join("tests/models");
    let mut p = spawn_process(&[
        "--model-repository",
        path(&repo),
        "--model-control-mode",
        "explicit",
        "--load-model",
        "slow",
        "--exit-timeout-secs",
        "20",
    ]);
    let url = format!("{}/v2/models/slow/infer", p.http);
    // One request runs for 600 ms; three more wait in the queue behind it.
    let running = tokio::spawn({
        let url = url.clone();
        async move { post_json(&url, &slow_body(600.0)).await }
    });
    tokio::time::sleep(Duration::from_millis(150)).await;
    let queued: Vec<_> = (0..3)
        .map(|_| {
            let url = url.clone();
            tokio::spawn(async move { post_json(&url, &slow_body(200.0)).await })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(100)).await;

    let signalled = Instant::now();
    let killed = std::process::Command::new("kill")
        .args(["-TERM", &p.child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    // New work is turned away at once: the listener is closed (or, on a connection already open, 503).
    tokio::time::sleep(Duration::from_millis(100)).await;
    match common::http().post(&url).json(&slow_body(1.0)).send().await {
        Err(e) => assert!(e.is_connect(), "{e}"),
        Ok(r) => assert_eq!(r.status(), 503),
    }

    let (status, v) = running.await.unwrap();
    assert_eq!(status, 200, "the running request finishes: {v}");
    for q in queued {
        let (status, v) = q.await.unwrap();
        assert_eq!(status, 200, "a queued request finishes: {v}");
    }
    let exit = tokio::task::spawn_blocking(move || {
        let status = p.child.wait().unwrap();
        let logs: Vec<String> = p.lines.map_while(Result::ok).collect();
        (status, logs)
    })
    .await
    .unwrap();
    assert!(exit.0.success(), "exit status {:?}; logs: {:?}", exit.0, exit.1);
    assert!(signalled.elapsed() < Duration::from_secs(20));
    assert!(
        exit.1.iter().any(|l| l.contains("shut down: every request answered")),
        "{:?}",
        exit.1
    );
}
