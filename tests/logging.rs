//! Triton's logging extension: `GET`/`POST /v2/logging` on the `inferd` binary, whose log lines show that a
//! change applies at once; and the answer of a server running without inferd's own subscriber.
mod common;

use std::sync::mpsc;
use std::time::Duration;

use common::{http, spawn_process, ServerProcess};
use serde_json::{json, Value};

/// The server's log lines, read on a thread so a test can wait for one with a deadline.
struct Lines(mpsc::Receiver<String>);

impl Lines {
    /// Takes the server's log reader; the server lives as long as the returned `Child`.
    fn follow(server: ServerProcess) -> (common::Child, String, Self) {
        let ServerProcess {
            child, http, mut lines, ..
        } = server;
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            while let Some(Ok(line)) = lines.next() {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        (child, http, Self(rx))
    }

    /// Every line up to and including the first that contains `needle`.
    fn until(&self, needle: &str) -> Vec<String> {
        let mut seen = Vec::new();
        loop {
            let line = self
                .0
                .recv_timeout(Duration::from_secs(20))
                .unwrap_or_else(|_| panic!("no log line with '{needle}' within 20 s; saw {seen:#?}"));
            let found = line.contains(needle);
            seen.push(line);
            if found {
                return seen;
            }
        }
    }
}

/// The binary serving the example repository, with `extra` flags.
fn serve(extra: &[&str]) -> ServerProcess {
    let models = common::root().join("models");
    let mut args = vec!["--model-repository", common::path(&models)];
    args.extend_from_slice(extra);
    spawn_process(&args)
}

async fn logging(base: &str, body: Option<Value>) -> (u16, Value) {
    let url = format!("{base}/v2/logging");
    let req = match body {
        Some(b) => http().post(url).json(&b),
        None => http().get(url),
    };
    let resp = req.send().await.expect("answers");
    let status = resp.status().as_u16();
    (status, resp.json().await.expect("a JSON body"))
}

/// A request to `simple` with an id (logged at debug level once served); `version` "9" makes it fail as a
/// client's mistake (logged at info level).
async fn infer(base: &str, id: &str, version: Option<&str>) -> u16 {
    let path = match version {
        Some(v) => format!("{base}/v2/models/simple/versions/{v}/infer"),
        None => format!("{base}/v2/models/simple/infer"),
    };
    let mut body = common::simple_body();
    body["id"] = json!(id);
    http()
        .post(path)
        .json(&body)
        .send()
        .await
        .expect("answers")
        .status()
        .as_u16()
}

#[tokio::test]
async fn log_settings_start_at_tritons_defaults_and_a_post_answers_the_new_ones() {
    let server = serve(&[]);
    let (status, settings) = logging(&server.http, None).await;
    assert_eq!(status, 200);
    assert_eq!(
        settings,
        json!({"log_file": "", "log_info": true, "log_warning": true, "log_error": true, "log_verbose_level": 0,
               "log_format": "JSON"})
    );
    let (status, after) = logging(
        &server.http,
        Some(json!({"log_verbose_level": 2, "log_warning": false})),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(after["log_verbose_level"], 2);
    assert_eq!(after["log_warning"], false);
    assert_eq!(after["log_info"], true);
    assert_eq!(logging(&server.http, None).await.1, after);
}

#[tokio::test]
async fn a_change_of_verbose_level_info_and_format_changes_what_the_server_logs_at_once() {
    let (_server, base, lines) = Lines::follow(serve(&[]));

    // Verbose level 0: a served request leaves no line; level 1: one debug line per served request.
    assert_eq!(infer(&base, "served-quietly", None).await, 200);
    assert_eq!(logging(&base, Some(json!({"log_verbose_level": 1}))).await.0, 200);
    assert_eq!(infer(&base, "served-verbosely", None).await, 200);
    let seen = lines.until("served-verbosely");
    assert!(!seen.iter().any(|l| l.contains("served-quietly")), "{seen:#?}");
    assert!(seen.last().is_some_and(|l| l.contains("DEBUG")), "{seen:#?}");

    // log_info false: a client's mistake (an info line) is not logged; back on, it is.
    assert_eq!(
        logging(&base, Some(json!({"log_info": false, "log_verbose_level": 0})))
            .await
            .0,
        200
    );
    assert_eq!(infer(&base, "failed-quietly", Some("9")).await, 404);
    assert_eq!(logging(&base, Some(json!({"log_info": true}))).await.0, 200);
    assert_eq!(infer(&base, "failed-loudly", Some("9")).await, 404);
    let seen = lines.until("failed-loudly");
    assert!(!seen.iter().any(|l| l.contains("failed-quietly")), "{seen:#?}");

    // The format changes with the next line: JSON, then Triton's ISO8601 text.
    assert_eq!(
        logging(&base, Some(json!({"log_format": "ISO8601"}))).await.1["log_format"],
        "ISO8601"
    );
    assert_eq!(infer(&base, "failed-in-text", Some("9")).await, 404);
    let seen = lines.until("failed-in-text");
    let line = seen.last().expect("a line");
    assert!(serde_json::from_str::<Value>(line).is_err(), "{line}");
    let stamp = line.split_whitespace().next().unwrap_or_default();
    assert_eq!(stamp.len(), "2024-01-01T00:00:00Z".len(), "{line}");
    assert!(stamp.ends_with('Z') && stamp.as_bytes()[10] == b'T', "{line}");
    assert_eq!(logging(&base, Some(json!({"log_format": "JSON"}))).await.0, 200);
    assert_eq!(infer(&base, "failed-in-json", Some("9")).await, 404);
    let seen = lines.until("failed-in-json");
    let v: Value = serde_json::from_str(seen.last().expect("a line")).expect("a JSON line again");
    assert_eq!(v["level"], "INFO");
}

#[tokio::test]
async fn wrong_types_and_unknown_settings_are_400s_with_tritons_wording_and_change_nothing() {
    let server = serve(&[]);
    let cases = [
        (json!({"log_info": "true"}), "expect boolean for 'log_info'"),
        (json!({"log_error": 1}), "expect boolean for 'log_error'"),
        (json!({"log_verbose_level": -1}), "expect int32 for 'log_verbose_level'"),
        (
            json!({"log_verbose_level": "1"}),
            "expect int32 for 'log_verbose_level'",
        ),
        (
            json!({"log_format": "xml"}),
            "invalid argument for log_format, got: xml",
        ),
        (
            json!({"log_file": "/tmp/inferd.log"}),
            "log file location can not be updated through network protocol",
        ),
        (json!({"log_verbosity": 1}), "unknown log setting 'log_verbosity'"),
        // One bad setting refuses the whole request: the good one beside it is not applied.
        (
            json!({"log_verbose_level": 3, "log_warning": "no"}),
            "expect boolean for 'log_warning'",
        ),
    ];
    for (body, wording) in cases {
        let (status, answer) = logging(&server.http, Some(body.clone())).await;
        assert_eq!(status, 400, "{body} -> {answer}");
        let error = answer["error"].as_str().unwrap_or_default();
        assert!(error.contains(wording), "{body} -> {error}");
    }
    let resp = http()
        .post(format!("{}/v2/logging", server.http))
        .body("{not json")
        .send()
        .await
        .expect("answers");
    assert_eq!(resp.status(), 400);
    let (_, settings) = logging(&server.http, None).await;
    assert_eq!(settings["log_verbose_level"], 0);
    assert_eq!(settings["log_warning"], true);
    // Naming the console, where the logs already go, is accepted as no change.
    assert_eq!(logging(&server.http, Some(json!({"log_file": ""}))).await.0, 200);
}

#[tokio::test]
async fn with_an_admin_token_changing_log_settings_needs_it_and_reading_them_does_not() {
    let server = serve(&["--admin-token", "s3cret"]);
    assert_eq!(logging(&server.http, None).await.0, 200);
    let (status, _) = logging(&server.http, Some(json!({"log_verbose_level": 1}))).await;
    assert_eq!(status, 401);
    let resp = http()
        .post(format!("{}/v2/logging", server.http))
        .bearer_auth("s3cret")
        .json(&json!({"log_verbose_level": 1}))
        .send()
        .await
        .expect("answers");
    assert_eq!(resp.status(), 200);
    assert_eq!(logging(&server.http, None).await.1["log_verbose_level"], 1);
}

#[tokio::test]
async fn metadata_lists_the_logging_extension() {
    let server = serve(&[]);
    let (_, meta) = common::get(&format!("{}/v2", server.http)).await;
    let extensions = meta["extensions"].as_array().cloned().unwrap_or_default();
    assert!(extensions.contains(&json!("logging")), "{meta}");
}

#[tokio::test]
async fn a_server_without_inferds_log_subscriber_says_logging_cannot_be_changed() {
    // This test binary never installs inferd's subscriber, so its in-process server has nothing to change.
    let s = common::server();
    let (status, body) = logging(&s.http, None).await;
    assert_eq!(status, 503, "{body}");
    assert!(body["error"]
        .as_str()
        .unwrap_or_default()
        .contains("does not support dynamic logging"));
    let err = common::grpc(s)
        .await
        .log_settings(inferd::proto::LogSettingsRequest::default())
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unavailable);
}
