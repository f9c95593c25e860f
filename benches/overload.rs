//! Overload: the release server under ten times the load it can carry, then under half, right after.
//!
//! 1. capacity: closed loop at concurrency 32 for 15 s on `minilm` (sentence embeddings on candle, one
//!    thread: a compute-bound model whose capacity this machine's load generator can exceed tenfold);
//! 2. overload: open loop at 10× that rate for 30 s; the excess must get 429 quickly, admitted requests a
//!    bounded latency (the model's queue holds 128), and resident memory must stay bounded;
//! 3. recovery: open loop at half the capacity for 15 s straight after; everything must succeed at once.
//!
//! `cargo bench --bench overload` prints the figures; `-- --record` also writes the "Overload" section of
//! benches/RESULTS.md. Needs `make build` (release binary) and `make setup` (MiniLM's weights).
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

mod support;

const MODEL: &str = "minilm";
const OVERLOAD_FACTOR: f64 = 10.0;

struct Server {
    child: Child,
    http: String,
    shown: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_server(port: u16) -> Server {
    let root = support::root();
    let binary = root.join("target/release/inferd");
    assert!(binary.is_file(), "{} missing: run `make build`", binary.display());
    let args = [
        "serve".to_string(),
        "--model-repository".into(),
        root.join("models").display().to_string(),
        "--model-control-mode".into(),
        "explicit".into(),
        "--load-model".into(),
        MODEL.into(),
        "--http-port".into(),
        port.to_string(),
        "--grpc-port".into(),
        (port + 1).to_string(),
        "--metrics-port".into(),
        (port + 2).to_string(),
    ];
    let child = Command::new(&binary)
        .args(&args)
        .current_dir(&root)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("the server starts");
    let shown = format!("inferd {}", args.join(" ")).replace(&format!("{}/", root.display()), "");
    Server {
        child,
        http: format!("http://127.0.0.1:{port}"),
        shown,
    }
}

fn rss_mib(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .map_or(0.0, |kib| kib / 1024.0)
}

/// One request's outcome: HTTP status (0: no answer) and latency.
type Outcome = (u16, Duration);

#[derive(Default)]
struct Phase {
    outcomes: Vec<Outcome>,
    seconds: f64,
    rss_peak: f64,
}

impl Phase {
    fn count(&self, status: u16) -> usize {
        self.outcomes.iter().filter(|(s, _)| *s == status).count()
    }
    fn other(&self) -> usize {
        self.outcomes.iter().filter(|(s, _)| *s != 200 && *s != 429).count()
    }
    fn quantile_ms(&self, status: u16, q: f64) -> f64 {
        let mut l: Vec<Duration> = self
            .outcomes
            .iter()
            .filter(|(s, _)| *s == status)
            .map(|(_, d)| *d)
            .collect();
        if l.is_empty() {
            return 0.0;
        }
        l.sort();
        l[((l.len() - 1) as f64 * q).round() as usize].as_secs_f64() * 1000.0
    }
    fn ok_rate(&self) -> f64 {
        self.count(200) as f64 / self.seconds
    }
    /// The phase's line of the results table.
    fn row(&self, label: &str, offered: Option<f64>) -> String {
        let refused = if self.count(429) > 0 {
            format!(
                "{:.2} / {:.2} ms",
                self.quantile_ms(429, 0.5),
                self.quantile_ms(429, 0.99)
            )
        } else {
            "—".into()
        };
        format!(
            "| {label} | {} | {} ({:.0}/s) | {} | {} | {:.0} / {:.0} ms | {refused} | {:.0} MiB |",
            offered.map_or("—".into(), |r| format!("{r:.0}/s")),
            self.count(200),
            self.ok_rate(),
            self.count(429),
            self.other(),
            self.quantile_ms(200, 0.5),
            self.quantile_ms(200, 0.99),
            self.rss_peak,
        )
    }
}

fn body(sentences: &[String], i: usize) -> Vec<u8> {
    let text = &sentences[i % sentences.len()];
    serde_json::to_vec(&serde_json::json!({"inputs": [
        {"name": "TEXT", "datatype": "BYTES", "shape": [1, 1], "data": [text]}
    ]}))
    .expect("json")
}

async fn send(client: &reqwest::Client, url: &str, body: Vec<u8>) -> Outcome {
    let t0 = Instant::now();
    let status = match client.post(url).body(body).send().await {
        Ok(r) => {
            let s = r.status().as_u16();
            let _ = r.bytes().await;
            s
        }
        Err(_) => 0,
    };
    (status, t0.elapsed())
}

/// Runs a phase while sampling the server's RSS every 100 ms; the phase keeps the peak.
async fn with_rss(pid: u32, phase: impl std::future::Future<Output = Phase>) -> Phase {
    let done = Arc::new(AtomicBool::new(false));
    let watcher = {
        let done = done.clone();
        std::thread::spawn(move || {
            let mut peak: f64 = 0.0;
            while !done.load(Ordering::Relaxed) {
                peak = peak.max(rss_mib(pid));
                std::thread::sleep(Duration::from_millis(100));
            }
            peak
        })
    };
    let mut phase = phase.await;
    done.store(true, Ordering::Relaxed);
    phase.rss_peak = watcher.join().expect("RSS sampler");
    phase
}

async fn closed_loop(
    client: &reqwest::Client,
    url: &str,
    sentences: &[String],
    concurrency: usize,
    secs: u64,
) -> Phase {
    let end = Instant::now() + Duration::from_secs(secs);
    let start = Instant::now();
    let tasks: Vec<_> = (0..concurrency)
        .map(|c| {
            let (client, url, sentences) = (client.clone(), url.to_string(), sentences.to_vec());
            tokio::spawn(async move {
                let mut out = Vec::new();
                let mut i = c;
                while Instant::now() < end {
                    out.push(send(&client, &url, body(&sentences, i)).await);
                    i += concurrency;
                }
                out
            })
        })
        .collect();
    let mut phase = Phase::default();
    for t in tasks {
        phase.outcomes.extend(t.await.expect("task"));
    }
    phase.seconds = start.elapsed().as_secs_f64();
    phase
}

/// Sends at `rate` requests per second whatever the answers, for `secs`; waits for every answer.
async fn open_loop(client: &reqwest::Client, url: &str, sentences: &[String], rate: f64, secs: u64) -> Phase {
    let start = Instant::now();
    let mut sent = 0usize;
    let mut tasks = Vec::new();
    let mut tick = tokio::time::interval(Duration::from_millis(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    while start.elapsed() < Duration::from_secs(secs) {
        tick.tick().await;
        let due = (start.elapsed().as_secs_f64() * rate) as usize;
        while sent < due {
            let (client, url, b) = (client.clone(), url.to_string(), body(sentences, sent));
            tasks.push(tokio::spawn(async move { send(&client, &url, b).await }));
            sent += 1;
        }
    }
    let mut phase = Phase::default();
    for t in tasks {
        phase.outcomes.push(t.await.expect("task"));
    }
    phase.seconds = secs as f64;
    phase
}

fn main() {
    let record = std::env::args().any(|a| a == "--record");
    let sentences = support::sentences();
    let server = start_server(18400);
    let pid = server.child.id();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let url = format!("{}/v2/models/{MODEL}/infer", server.http);
    let report = rt.block_on(async {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .expect("client");
        let ready = format!("{}/v2/health/ready", server.http);
        let deadline = Instant::now() + Duration::from_secs(180);
        while !client.get(&ready).send().await.is_ok_and(|r| r.status() == 200) {
            assert!(Instant::now() < deadline, "the server was not ready within 180 s");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let _ = closed_loop(&client, &url, &sentences, 8, 3).await; // warm-up
        let rss_idle = rss_mib(pid);

        let capacity = with_rss(pid, closed_loop(&client, &url, &sentences, 32, 15)).await;
        let offered = capacity.ok_rate() * OVERLOAD_FACTOR;
        let overload = with_rss(pid, open_loop(&client, &url, &sentences, offered, 30)).await;
        let calm = capacity.ok_rate() * 0.5;
        let recovery = with_rss(pid, open_loop(&client, &url, &sentences, calm, 15)).await;
        let rss_end = rss_mib(pid);

        let first_second: Vec<&Outcome> = recovery.outcomes.iter().take(calm.ceil() as usize).collect();
        let first_ok = first_second.iter().filter(|(s, _)| *s == 200).count();
        format!(
            "Command: `cargo bench --bench overload -- --record` (release server `{shown}`; load from a Rust \
             open-loop generator over HTTP on the same 2 cores).\n\n\
             | phase | offered | answered 200 | 429 | other | 200 p50 / p99 | 429 p50 / p99 | RSS peak |\n\
             |---|---|---|---|---|---|---|---|\n{}\n{}\n{}\n\n\
             RSS idle after warm-up {rss_idle:.0} MiB, at the end {rss_end:.0} MiB. In the first second of recovery \
             {first_ok} of {first_n} requests succeeded.",
            capacity.row("capacity (closed loop, c=32, 15 s)", None),
            overload.row(
                &format!("overload ({OVERLOAD_FACTOR:.0}× capacity, 30 s)"),
                Some(offered)
            ),
            recovery.row("recovery (0.5× capacity, 15 s)", Some(calm)),
            shown = server.shown,
            first_n = first_second.len(),
        )
    });
    println!("{report}");
    if record {
        replace_section("overload", "Overload", &report);
    }
}

/// Puts `block` between the section's markers in benches/RESULTS.md (the Python scripts' `replace_section`).
fn replace_section(name: &str, title: &str, block: &str) {
    let path: PathBuf = support::root().join("benches/RESULTS.md");
    let text = std::fs::read_to_string(&path).expect("RESULTS.md");
    let (start, end) = (
        format!("<!-- bench:{name}:start -->"),
        format!("<!-- bench:{name}:end -->"),
    );
    let block = format!("{start}\n{block}\n{end}");
    let text = match (text.find(&start), text.find(&end)) {
        (Some(a), Some(b)) if a < b => format!("{}{block}{}", &text[..a], &text[b + end.len()..]),
        _ => format!("{text}\n## {title}\n\n{block}\n"),
    };
    std::fs::write(&path, text).expect("RESULTS.md written");
}
