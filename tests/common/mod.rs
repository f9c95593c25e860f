//! A real server for the integration tests: started once per test binary, on ephemeral ports, serving the
//! example repository (`models/`) and the test repository (`tests/models/`), on its own runtime so that it
//! outlives each test's runtime.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use clap::Parser;
use inferd::cli::{Cli, Command, ServeArgs};
use inferd::proto::grpc_inference_service_client::GrpcInferenceServiceClient;
use inferd::server::RunningServer;
use serde_json::Value;
use tonic::transport::Channel;

pub struct TestServer {
    pub http: String,
    pub grpc: String,
    pub metrics: String,
}

/// The checkout: where it was built, unless INFERD_ROOT names another copy (a test binary carried to a GPU
/// machine runs against the working tree there).
pub fn root() -> PathBuf {
    std::env::var_os("INFERD_ROOT")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")))
}

/// Command-line arguments as a user would type them, with every port ephemeral and on loopback.
pub fn args(extra: &[&str]) -> ServeArgs {
    let mut argv = vec![
        "inferd",
        "serve",
        "--http-port",
        "0",
        "--grpc-port",
        "0",
        "--metrics-port",
        "0",
        "--http-address",
        "127.0.0.1",
        "--grpc-address",
        "127.0.0.1",
        "--metrics-address",
        "127.0.0.1",
    ];
    argv.extend_from_slice(extra);
    let Command::Serve(args) = Cli::parse_from(argv).command else {
        unreachable!("the arguments say serve")
    };
    args
}

/// Starts a server with `args` on a runtime of its own that lives as long as the test process.
pub fn spawn(args: ServeArgs) -> anyhow::Result<TestServer> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async move {
            match inferd::server::start(args).await {
                Ok(mut server) => {
                    let _ = tx.send(Ok(addrs(&server)));
                    let _ = server.wait().await;
                }
                Err(e) => {
                    let _ = tx.send(Err(e));
                }
            }
        });
    });
    rx.recv()?
}

fn addrs(s: &RunningServer) -> TestServer {
    let url = |a: Option<SocketAddr>| a.map(|a| a.to_string()).unwrap_or_default();
    TestServer {
        http: format!("http://{}", url(s.http_addr)),
        grpc: format!("http://{}", url(s.grpc_addr)),
        metrics: format!("http://{}", url(s.metrics_addr)),
    }
}

/// The shared server: example and test repositories.
pub fn server() -> &'static TestServer {
    static SERVER: OnceLock<TestServer> = OnceLock::new();
    SERVER.get_or_init(|| {
        let models = root().join("models");
        let test_models = root().join("tests/models");
        let a = args(&[
            "--model-repository",
            path(&models),
            "--model-repository",
            path(&test_models),
        ]);
        spawn(a).expect("the test server starts")
    })
}

pub fn path(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

/// A client per call: a pooled connection belongs to the runtime of the test that opened it.
/// The tests' HTTP client. Building one loads the platform's root certificates (~40 ms, long enough to
/// reorder requests a test sends side by side), so it is built once; it keeps no idle connections, so none
/// outlives the test (and the runtime) that opened it.
pub fn http() -> reqwest::Client {
    static CLIENT: std::sync::OnceLock<reqwest::Client> = std::sync::OnceLock::new();
    CLIENT
        .get_or_init(|| {
            reqwest::Client::builder()
                .pool_max_idle_per_host(0)
                .build()
                .expect("an HTTP client")
        })
        .clone()
}

async fn read(resp: reqwest::Response) -> (u16, Value) {
    let status = resp.status().as_u16();
    let text = resp.text().await.expect("body");
    (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
}

pub async fn get(url: &str) -> (u16, Value) {
    read(http().get(url).send().await.expect("request sent")).await
}

pub async fn post_json(url: &str, body: &Value) -> (u16, Value) {
    read(http().post(url).json(body).send().await.expect("request sent")).await
}

pub async fn post_raw(url: &str, body: Vec<u8>, header_len: Option<usize>) -> reqwest::Response {
    let mut req = http().post(url).body(body);
    if let Some(n) = header_len {
        req = req.header("Inference-Header-Content-Length", n.to_string());
    }
    req.send().await.expect("request sent")
}

/// A response with Triton's binary tensor extension: its JSON header and the binary section after it.
pub async fn binary_response(resp: reqwest::Response) -> (Value, Vec<u8>) {
    let json_len: usize = resp.headers()["inference-header-content-length"]
        .to_str()
        .expect("a header length")
        .parse()
        .expect("a number");
    let bytes = resp.bytes().await.expect("body");
    let head = serde_json::from_slice(&bytes[..json_len]).expect("a JSON header");
    (head, bytes[json_len..].to_vec())
}

/// The metrics page of a server (`TestServer::metrics`).
pub async fn scrape(metrics: &str) -> String {
    http()
        .get(format!("{metrics}/metrics"))
        .send()
        .await
        .expect("scrape")
        .text()
        .await
        .expect("metrics text")
}

pub async fn grpc(server: &TestServer) -> GrpcInferenceServiceClient<Channel> {
    GrpcInferenceServiceClient::connect(server.grpc.clone())
        .await
        .expect("gRPC connects")
}

pub fn i32_bytes(v: &[i32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

pub fn i32_values(b: &[u8]) -> Vec<i32> {
    b.chunks_exact(4)
        .map(|c| i32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

pub fn f32_values(b: &[u8]) -> Vec<f32> {
    b.chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

/// A REST infer body for `simple`: one row of `simple_inputs`, as JSON.
pub fn simple_body() -> Value {
    let (a, b) = simple_inputs(1);
    serde_json::json!({"inputs": [
        {"name": "INPUT0", "shape": [1, 16], "datatype": "INT32", "data": a},
        {"name": "INPUT1", "shape": [1, 16], "datatype": "INT32", "data": b},
    ]})
}

/// BYTES tensor data: each element length-prefixed (u32 little-endian), as raw contents and binary data carry it.
pub fn length_prefixed(elements: &[&[u8]]) -> Vec<u8> {
    let mut raw = Vec::new();
    for e in elements {
        raw.extend_from_slice(&(e.len() as u32).to_le_bytes());
        raw.extend_from_slice(e);
    }
    raw
}

/// Two INT32 inputs for `simple` of `rows` rows, with distinct values everywhere.
pub fn simple_inputs(rows: usize) -> (Vec<i32>, Vec<i32>) {
    let n = 16 * rows as i32;
    ((0..n).collect(), (0..n).map(|x| 100 - 3 * x).collect())
}

/// A deterministic pseudo-random FP32 row generator (no extra crates needed).
pub fn random_f32(seed: u64, n: usize) -> Vec<f32> {
    let mut s = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
    (0..n)
        .map(|_| {
            s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

/// A metrics page read with a real Prometheus text-format parser.
pub struct Scraped {
    pub text: String,
    pub page: prometheus_parse::Scrape,
}

pub async fn scrape_parsed(metrics: &str) -> Scraped {
    let text = scrape(metrics).await;
    let page = prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_string()))).expect("valid exposition");
    Scraped { text, page }
}

impl Scraped {
    fn matching<'a>(
        &'a self,
        name: &'a str,
        labels: &'a [(&'a str, &'a str)],
    ) -> impl Iterator<Item = &'a prometheus_parse::Sample> + 'a {
        self.page
            .samples
            .iter()
            .filter(move |s| s.metric == name && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
    }

    /// The sum of a counter's or gauge's samples whose labels include `labels` (0 when there are none).
    pub fn value(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        use prometheus_parse::Value::*;
        self.matching(name, labels)
            .map(|s| match s.value {
                Counter(v) | Gauge(v) | Untyped(v) => v,
                _ => panic!("{name} is not a counter or gauge"),
            })
            .sum()
    }

    /// Whether any sample of `name` has labels including `labels`.
    pub fn has(&self, name: &str, labels: &[(&str, &str)]) -> bool {
        self.matching(name, labels).next().is_some()
    }

    /// A histogram's cumulative buckets (upper bound, count), `+Inf` last; exactly one series must match.
    pub fn histogram(&self, name: &str, labels: &[(&str, &str)]) -> Vec<(f64, f64)> {
        let series: Vec<_> = self.matching(name, labels).collect();
        assert_eq!(series.len(), 1, "one {name} series with {labels:?}");
        match &series[0].value {
            prometheus_parse::Value::Histogram(b) => b.iter().map(|c| (c.less_than, c.count)).collect(),
            _ => panic!("{name} is not a histogram"),
        }
    }

    /// Metric family names on the page (from their HELP lines).
    pub fn families(&self) -> std::collections::BTreeSet<String> {
        self.page.docs.keys().cloned().collect()
    }
}

/// A server over `repo` in explicit model-control mode, with the models in `load` loaded at start.
pub fn explicit(repo: &Path, load: &[&str]) -> TestServer {
    let mut a = vec!["--model-repository", path(repo), "--model-control-mode", "explicit"];
    for m in load {
        a.extend(["--load-model", m]);
    }
    spawn(args(&a)).expect("server starts")
}

/// A server over one repository that reports ready even while some of its models failed to load.
pub fn serve_despite_failures(repo: &Path) -> TestServer {
    spawn(args(&["--model-repository", path(repo), "--strict-readiness", "false"])).expect("server starts")
}

/// A child process that is killed when the test is done with it, whether it passed or panicked.
pub struct Child(pub std::process::Child);

impl std::ops::Deref for Child {
    type Target = std::process::Child;

    fn deref(&self) -> &std::process::Child {
        &self.0
    }
}

impl std::ops::DerefMut for Child {
    fn deref_mut(&mut self) -> &mut std::process::Child {
        &mut self.0
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The `inferd` binary running as its own process (JSON logs, HTTP only, on a free loopback port), for what
/// only a process shows: its log lines, signals, its exit status.
pub struct ServerProcess {
    pub child: Child,
    pub http: String,
    /// Its JSON log lines up to "inferd ready".
    pub startup: Vec<Value>,
    /// The rest of its JSON log lines.
    pub lines: std::io::Lines<std::io::BufReader<std::process::ChildStdout>>,
}

pub fn spawn_process(extra: &[&str]) -> ServerProcess {
    use std::io::BufRead;
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_inferd"))
        .args([
            "serve",
            "--log-format",
            "json",
            "--http-port",
            "0",
            "--http-address",
            "127.0.0.1",
        ])
        .args(["--allow-grpc", "false", "--allow-metrics", "false"])
        .args(extra)
        .env("RUST_LOG", "info")
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("inferd starts");
    let mut lines = std::io::BufReader::new(child.stdout.take().expect("stdout")).lines();
    let mut startup = Vec::new();
    let http = loop {
        let line = lines.next().expect("inferd logs until ready").expect("a log line");
        let v: Value = serde_json::from_str(&line).expect("every log line is JSON");
        if let Some(rest) = v["fields"]["message"]
            .as_str()
            .and_then(|m| m.strip_prefix("inferd ready: HTTP "))
        {
            break format!("http://{}", rest.split_whitespace().next().expect("an address"));
        }
        startup.push(v);
    };
    ServerProcess {
        child: Child(child),
        http,
        startup,
        lines,
    }
}

/// Copies the example model `source` (`models/<source>`: its version 1 and its config) into `repo` as `name`,
/// with the config renamed and each `(from, to)` edit applied; returns the copy's folder.
pub fn copy_example(repo: &Path, source: &str, name: &str, edits: &[(&str, &str)]) -> PathBuf {
    copy_model_from(&root().join("models"), repo, source, name, edits)
}

/// As `copy_example`, for a model of the test repository (`tests/models/<source>`).
pub fn copy_test_model(repo: &Path, source: &str, name: &str, edits: &[(&str, &str)]) -> PathBuf {
    copy_model_from(&root().join("tests/models"), repo, source, name, edits)
}

fn copy_model_from(models: &Path, repo: &Path, source: &str, name: &str, edits: &[(&str, &str)]) -> PathBuf {
    let from = models.join(source);
    let to = repo.join(name);
    std::fs::create_dir_all(to.join("1")).expect("model folder");
    for f in std::fs::read_dir(from.join("1")).expect("version 1") {
        let f = f.expect("a file").path();
        if f.is_file() {
            std::fs::copy(&f, to.join("1").join(f.file_name().expect("a name"))).expect("copied");
        }
    }
    let mut cfg = std::fs::read_to_string(from.join("config.pbtxt"))
        .expect("config.pbtxt")
        .replace(&format!("name: \"{source}\""), &format!("name: \"{name}\""));
    for (a, b) in edits {
        cfg = cfg.replace(a, b);
    }
    std::fs::write(to.join("config.pbtxt"), cfg).expect("config written");
    to
}

/// One HTTP/1.1 request written byte for byte (a client library would normalise paths such as `/..` away):
/// the status and the body as JSON (or as a string when it is not JSON).
pub async fn raw_http(base: &str, method: &str, path: &str, body: &str) -> (u16, Value) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = base.strip_prefix("http://").expect("an http:// address");
    let mut tcp = tokio::net::TcpStream::connect(addr).await.expect("connects");
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    tcp.write_all(request.as_bytes()).await.expect("request written");
    let mut response = Vec::new();
    tcp.read_to_end(&mut response).await.expect("response read");
    let text = String::from_utf8_lossy(&response);
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP response: {text}"));
    let body = text.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    (
        status,
        serde_json::from_str(body).unwrap_or(Value::String(body.to_string())),
    )
}

/// An address of this machine other than loopback, so that a test can be a client the server does not see as
/// local: the one its default route leaves from, else any non-loopback address of its interfaces. Fails
/// (rather than skips) on a machine with none.
pub fn non_loopback_ip() -> std::net::IpAddr {
    // Connecting a UDP socket sends nothing; it only picks the route, and with it the source address.
    let routed = std::net::UdpSocket::bind("0.0.0.0:0")
        .and_then(|s| s.connect("1.1.1.1:9").and_then(|()| s.local_addr()))
        .map(|a| a.ip())
        .ok()
        .filter(|ip| !ip.is_loopback() && !ip.is_unspecified());
    routed
        .or_else(interface_ipv4)
        .expect("this machine has a non-loopback IPv4 address (a test client must come from one)")
}

/// A non-loopback IPv4 address of one of this machine's interfaces.
fn interface_ipv4() -> Option<std::net::IpAddr> {
    let mut list: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs fills `list` with a linked list this function frees below, and reads nothing else.
    if unsafe { libc::getifaddrs(&mut list) } != 0 {
        return None;
    }
    let mut found = None;
    let mut at = list;
    while !at.is_null() && found.is_none() {
        // SAFETY: `at` is a node of the list getifaddrs returned, not yet freed.
        let ifa = unsafe { &*at };
        if !ifa.ifa_addr.is_null() {
            // SAFETY: a non-null ifa_addr points to a sockaddr whose family says its real type.
            let family = unsafe { (*ifa.ifa_addr).sa_family };
            if i32::from(family) == libc::AF_INET {
                // SAFETY: AF_INET means the sockaddr is a sockaddr_in.
                let sin = unsafe { &*(ifa.ifa_addr as *const libc::sockaddr_in) };
                let ip = std::net::Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr));
                if !ip.is_loopback() && !ip.is_unspecified() {
                    found = Some(std::net::IpAddr::V4(ip));
                }
            }
        }
        at = ifa.ifa_next;
    }
    // SAFETY: `list` came from getifaddrs and is freed once.
    unsafe { libc::freeifaddrs(list) };
    found
}

/// Whether a fixture that `make setup` installs (MiniLM's weights, say) is here. Where it is missing the
/// test that needs it says so and passes, except under `make test` (INFERD_REQUIRE_FIXTURES=1), which
/// installs it: there a missing fixture fails the test.
pub fn fixture_present(relative: &str) -> bool {
    let present = root().join(relative).exists();
    if !present {
        assert!(
            std::env::var_os("INFERD_REQUIRE_FIXTURES").is_none(),
            "{relative} is missing, and make test installs it (make setup)"
        );
        eprintln!("skipped: {relative} is missing; run `make setup` to place it");
    }
    present
}
