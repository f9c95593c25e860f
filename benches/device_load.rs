//! inferd against its raw runtimes on one device: the example MLP (ONNX Runtime, and candle) and MiniLM
//! (candle, and its ONNX export on ONNX Runtime), each at concurrency 1 and 64 through inferd's gRPC
//! front-end (one row per request; the server batches), beside the same work done in-process by the raw
//! runtime (batch 1, then batch 64). Prints a Markdown table; scripts/gpu-check.sh records it.
//!
//!   cargo bench --features cuda --bench device_load -- --device gpu [--seconds 5]
//!   cargo bench --bench device_load -- --device cpu        (the same on the CPU, anywhere)
mod support;

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use candle_core::Device;
use clap::Parser;
use inferd::cli::{Cli, Command};
use inferd::proto::grpc_inference_service_client::GrpcInferenceServiceClient;
use inferd::proto::model_infer_request::InferInputTensor;
use inferd::proto::ModelInferRequest;
use ort::session::Session;
use ort::value::Tensor;
use support::{root, sentences, tokenize, tokenizer, RawMiniLm, RawMlp};

struct Options {
    gpu: bool,
    seconds: f64,
}

fn options() -> Options {
    let args: Vec<String> = std::env::args().collect();
    let value = |flag: &str| {
        args.iter()
            .position(|a| a == flag)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    Options {
        gpu: value("--device").as_deref() == Some("gpu"),
        seconds: value("--seconds").and_then(|s| s.parse().ok()).unwrap_or(5.0),
    }
}

/// A copy of an example model placed on the device, batching up to 64.
fn place(repo: &Path, name: &str, kind: &str) {
    let from = root().join("models").join(name);
    let to = repo.join(name);
    std::fs::create_dir_all(to.join("1/1_Pooling")).unwrap();
    let mut stack = vec![from.join("1")];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).unwrap() {
            let p = e.unwrap().path();
            let dest = to.join(p.strip_prefix(&from).unwrap());
            if p.is_dir() {
                stack.push(p);
            } else {
                std::fs::copy(&p, dest).unwrap();
            }
        }
    }
    let cfg = std::fs::read_to_string(from.join("config.pbtxt"))
        .unwrap()
        .replace("kind: KIND_CPU", &format!("kind: {kind}"))
        .replace("max_batch_size: 32", "max_batch_size: 64");
    std::fs::write(to.join("config.pbtxt"), cfg).unwrap();
}

fn input(name: &str, datatype: &str, shape: Vec<i64>) -> InferInputTensor {
    InferInputTensor::raw(name, datatype, shape)
}

/// One request of one row for each model.
fn request(model: &str, text: &str) -> ModelInferRequest {
    let f32s = |v: Vec<f32>| bytes::Bytes::from(v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>());
    let (inputs, raw) = match model {
        "mlp" | "mlp_candle" => (
            vec![input("INPUT", "FP32", vec![1, 64])],
            vec![f32s((0..64).map(|i| i as f32 / 64.0).collect())],
        ),
        "minilm" => {
            let mut b = (text.len() as u32).to_le_bytes().to_vec();
            b.extend_from_slice(text.as_bytes());
            (vec![input("TEXT", "BYTES", vec![1, 1])], vec![bytes::Bytes::from(b)])
        }
        _ => {
            // The client tokenises, as a caller of an ONNX text model must; loaded once.
            static TOKENIZER: std::sync::OnceLock<tokenizers::Tokenizer> = std::sync::OnceLock::new();
            let tok = TOKENIZER.get_or_init(|| tokenizer(&root().join("models/minilm/1")));
            let (ids, mask, len) = tokenize(tok, &[text]);
            let i64s =
                |v: Vec<u32>| bytes::Bytes::from(v.iter().flat_map(|&x| (x as i64).to_le_bytes()).collect::<Vec<u8>>());
            (
                vec![
                    input("input_ids", "INT64", vec![1, len as i64]),
                    input("attention_mask", "INT64", vec![1, len as i64]),
                ],
                vec![i64s(ids), i64s(mask)],
            )
        }
    };
    ModelInferRequest {
        model_name: model.into(),
        inputs,
        raw_input_contents: raw,
        ..Default::default()
    }
}

/// Requests per second and median latency (ms) with `c` callers for `secs`.
async fn through_inferd(url: &str, model: &str, c: usize, secs: f64) -> (f64, f64) {
    let texts = Arc::new(sentences());
    let client = GrpcInferenceServiceClient::connect(url.to_string())
        .await
        .expect("gRPC");
    let deadline = Instant::now() + Duration::from_secs_f64(secs);
    let tasks: Vec<_> = (0..c)
        .map(|i| {
            let (mut client, texts, model) = (client.clone(), texts.clone(), model.to_string());
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                let mut n = i;
                while Instant::now() < deadline {
                    let req = request(&model, &texts[n % texts.len()]);
                    n += c;
                    let t = Instant::now();
                    client.model_infer(req).await.expect("inference");
                    latencies.push(t.elapsed().as_secs_f64() * 1e3);
                }
                latencies
            })
        })
        .collect();
    let started = Instant::now();
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    all.sort_by(f64::total_cmp);
    (all.len() as f64 / started.elapsed().as_secs_f64(), all[all.len() / 2])
}

/// Rows per second of `f` (which handles `rows` rows per call) over about `secs`.
fn rate(rows: usize, secs: f64, mut f: impl FnMut()) -> f64 {
    f();
    let (t, mut n) = (Instant::now(), 0);
    while t.elapsed().as_secs_f64() < secs {
        f();
        n += rows;
    }
    n as f64 / t.elapsed().as_secs_f64()
}

fn ort_session(file: &Path, gpu: bool) -> Session {
    let env = inferd::backend::ort::environment(&inferd::backend::ort::find_library(None).unwrap()).unwrap();
    let mut b = Session::builder(&env).unwrap().with_intra_threads(1).unwrap();
    if gpu {
        #[cfg(feature = "cuda-ort")]
        {
            b = b
                .with_execution_providers([ort::ep::CUDA::default().build().error_on_failure()])
                .unwrap();
        }
    }
    b.commit_from_file(file).unwrap()
}

/// The raw runtime's rows per second at batch 1 and batch 64.
fn raw(model: &str, gpu: bool, secs: f64) -> (f64, f64) {
    #[cfg(feature = "candle-cuda")]
    let device = if gpu { Device::new_cuda(0).unwrap() } else { Device::Cpu };
    #[cfg(not(feature = "candle-cuda"))]
    let device = Device::Cpu;
    let texts = sentences();
    let batch = |n: usize| -> Vec<&str> { texts.iter().cycle().take(n).map(String::as_str).collect() };
    let at = |n: usize| -> f64 {
        match model {
            "mlp_candle" => {
                let m = RawMlp::load(&root().join("models/mlp_candle/1"), &device);
                let x = vec![0.5f32; n * 64];
                rate(n, secs, || drop(m.forward(&x, n)))
            }
            "minilm" => {
                let m = RawMiniLm::load(&root().join("models/minilm/1"), &device);
                let t = batch(n);
                rate(n, secs, || drop(m.embed(&t)))
            }
            "mlp" => {
                let mut s = ort_session(&root().join("models/mlp/1/model.onnx"), gpu);
                let x = vec![0.5f32; n * 64];
                rate(n, secs, || {
                    let t = Tensor::from_array(([n, 64], x.clone())).unwrap();
                    drop(s.run(ort::inputs!["INPUT" => t]).unwrap());
                })
            }
            _ => {
                let mut s = ort_session(&root().join("models/minilm_onnx/1/model.onnx"), gpu);
                let tok = tokenizer(&root().join("models/minilm/1"));
                let t = batch(n);
                rate(n, secs, || {
                    let (ids, mask, len) = tokenize(&tok, &t);
                    let i64s = |v: Vec<u32>| {
                        Tensor::from_array(([n, len], v.iter().map(|&x| x as i64).collect::<Vec<i64>>())).unwrap()
                    };
                    drop(
                        s.run(ort::inputs!["input_ids" => i64s(ids), "attention_mask" => i64s(mask)])
                            .unwrap(),
                    );
                })
            }
        }
    };
    (at(1), at(64))
}

fn main() {
    let o = options();
    if o.gpu {
        if let Some(why) = inferd::gpu::unavailable_reason() {
            println!("skipped: no GPU ({why})");
            return;
        }
    }
    let minilm = root().join("models/minilm/1/model.safetensors").is_file();
    let models: Vec<&str> = ["mlp", "mlp_candle", "minilm", "minilm_onnx"]
        .into_iter()
        .filter(|m| minilm || !m.starts_with("minilm"))
        .collect();
    let repo = tempfile::tempdir().unwrap();
    for m in &models {
        place(repo.path(), m, if o.gpu { "KIND_GPU" } else { "KIND_CPU" });
    }
    let rt = tokio::runtime::Runtime::new().unwrap();
    let repo_path = repo.path().to_str().unwrap().to_string();
    let server = rt.block_on(async {
        let argv = [
            "inferd",
            "serve",
            "--model-repository",
            &repo_path,
            "--http-port",
            "0",
            "--grpc-port",
            "0",
        ];
        let Command::Serve(args) =
            Cli::parse_from(
                argv.iter()
                    .chain(&["--metrics-port", "0", "--grpc-address", "127.0.0.1"]),
            )
            .command
        else {
            unreachable!("the arguments say serve")
        };
        inferd::server::start(args).await.expect("server starts")
    });
    let url = format!("http://{}", server.grpc_addr.unwrap());
    let device = if o.gpu { "GPU" } else { "CPU" };
    println!("| model ({device}) | inferd c=1 rows/s | p50 ms | inferd c=64 rows/s | p50 ms | raw batch 1 rows/s | raw batch 64 rows/s |");
    println!("|---|---|---|---|---|---|---|");
    for m in models {
        let (r1, l1) = rt.block_on(through_inferd(&url, m, 1, o.seconds));
        let (r64, l64) = rt.block_on(through_inferd(&url, m, 64, o.seconds));
        let (raw1, raw64) = raw(m, o.gpu, o.seconds / 2.0);
        println!("| {m} | {r1:.0} | {l1:.2} | {r64:.0} | {l64:.2} | {raw1:.0} | {raw64:.0} |");
    }
}
