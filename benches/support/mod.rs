//! Raw runtimes for the benchmarks: the work inferd's backends do, done straight through candle, tokenizers
//! and ONNX Runtime, so a benchmark can set inferd's numbers beside the floor; and the example repository served
//! in-process, for benchmarks of the server's own path.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use candle_core::{DType, Device, Tensor, D};
use candle_nn::{Linear, Module, VarBuilder};
use candle_transformers::models::bert::{BertModel, Config};
use inferd::backend::Backend;
use inferd::lifecycle::{Lifecycle, LifecycleConfig};
use inferd::model_name::ModelName;
use inferd::repository::VersionOptions;
use inferd::routing::Routes;
use inferd::serving::{Serving, ServingConfig};
use tokenizers::{PaddingParams, Tokenizer, TruncationParams};

/// The checkout: where it was built, unless INFERD_ROOT names another copy (a test binary carried to a GPU
/// machine runs against the working tree there).
pub fn root() -> PathBuf {
    std::env::var_os("INFERD_ROOT")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")))
}

/// The example repository (`models/`) served in-process with `backends`, as `inferd serve` runs it (metrics on,
/// small CPU models on the calling thread, no in-flight cap, 2^28 tensor elements at most), once `models` (all
/// when `None`) are loaded. The lifecycle keeps the loaded versions alive.
pub fn example_serving(
    backends: Vec<Arc<dyn Backend>>,
    models: Option<&[ModelName]>,
) -> (tokio::runtime::Runtime, Arc<Lifecycle>, Serving) {
    let routes = Arc::new(Routes::default());
    let lifecycle = Arc::new(Lifecycle::new(
        routes.clone(),
        LifecycleConfig {
            registry: Arc::new(inferd::registry::Registry::local(vec![root().join("models")])),
            backends,
            versions: VersionOptions {
                detailed_metrics: true,
                inline_below: Duration::from_micros(50),
            },
        },
    ));
    let serving = Serving::new(
        routes,
        ServingConfig {
            server_id: "bench".into(),
            strict_readiness: true,
            max_inflight: 0,
            max_tensor_elements: 1 << 28,
        },
    );
    let rt = tokio::runtime::Runtime::new().expect("a tokio runtime");
    rt.block_on(lifecycle.load_repository(models))
        .expect("the example repository lists the models");
    (rt, lifecycle, serving)
}

/// The benchmark's sentences (benches/minilm_input.json, what perf_analyzer sends too).
pub fn sentences() -> Vec<String> {
    let text = std::fs::read_to_string(root().join("benches/minilm_input.json")).expect("benches/minilm_input.json");
    let v: serde_json::Value = serde_json::from_str(&text).expect("JSON");
    v["data"]
        .as_array()
        .expect("data")
        .iter()
        .map(|d| d["TEXT"]["content"][0].as_str().expect("TEXT").to_string())
        .collect()
}

/// MiniLM's tokenizer as sentence-transformers uses it: 256 tokens at most, padded to the batch's longest.
pub fn tokenizer(dir: &Path) -> Tokenizer {
    let mut t = Tokenizer::from_file(dir.join("tokenizer.json")).expect("tokenizer.json");
    t.with_truncation(Some(TruncationParams {
        max_length: 256,
        ..Default::default()
    }))
    .expect("truncation");
    t.with_padding(Some(PaddingParams::default()));
    t
}

/// Token ids and attention mask of `texts`, `[rows, longest]` each.
pub fn tokenize(tokenizer: &Tokenizer, texts: &[&str]) -> (Vec<u32>, Vec<u32>, usize) {
    let enc = tokenizer.encode_batch(texts.to_vec(), true).expect("tokenize");
    let len = enc[0].len();
    let ids = enc.iter().flat_map(|e| e.get_ids().to_vec()).collect();
    let mask = enc.iter().flat_map(|e| e.get_attention_mask().to_vec()).collect();
    (ids, mask, len)
}

pub struct RawMiniLm {
    model: BertModel,
    tokenizer: Tokenizer,
    device: Device,
}

impl RawMiniLm {
    pub fn load(dir: &Path, device: &Device) -> Self {
        let config: Config =
            serde_json::from_str(&std::fs::read_to_string(dir.join("config.json")).unwrap()).expect("config.json");
        let weights = candle_core::safetensors::load(dir.join("model.safetensors"), device).expect("weights");
        let model = BertModel::load(VarBuilder::from_tensors(weights, DType::F32, device), &config).expect("BERT");
        Self {
            model,
            tokenizer: tokenizer(dir),
            device: device.clone(),
        }
    }

    /// Tokenise, BERT, mean pooling, L2 normalisation; the vectors are brought back to the host.
    pub fn embed(&self, texts: &[&str]) -> Vec<f32> {
        let (ids, mask, len) = tokenize(&self.tokenizer, texts);
        let rows = texts.len();
        let ids = Tensor::from_vec(ids, (rows, len), &self.device).unwrap();
        let mask = Tensor::from_vec(mask, (rows, len), &self.device).unwrap();
        let hidden = self
            .model
            .forward(&ids, &ids.zeros_like().unwrap(), Some(&mask))
            .unwrap();
        let m = mask.to_dtype(DType::F32).unwrap().unsqueeze(2).unwrap();
        let pooled = hidden
            .broadcast_mul(&m)
            .unwrap()
            .sum(1)
            .unwrap()
            .broadcast_div(&m.sum(1).unwrap())
            .unwrap();
        let norm = pooled.sqr().unwrap().sum_keepdim(D::Minus1).unwrap().sqrt().unwrap();
        pooled
            .broadcast_div(&norm)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap()
    }
}

/// The example MLP's layers (`models/mlp_candle`) straight through candle.
pub struct RawMlp {
    layers: Vec<Linear>,
    device: Device,
}

impl RawMlp {
    pub fn load(dir: &Path, device: &Device) -> Self {
        let mut w = candle_core::safetensors::load(dir.join("model.safetensors"), device).expect("weights");
        let mut take = |n: &str| w.remove(n).expect(n);
        let layers = vec![
            Linear::new(take("fc1.weight"), Some(take("fc1.bias"))),
            Linear::new(take("fc2.weight"), Some(take("fc2.bias"))),
        ];
        Self {
            layers,
            device: device.clone(),
        }
    }

    pub fn forward(&self, x: &[f32], rows: usize) -> Vec<f32> {
        let x = Tensor::from_slice(x, (rows, 64), &self.device).unwrap();
        let h = self.layers[0].forward(&x).unwrap().relu().unwrap();
        self.layers[1]
            .forward(&h)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap()
    }
}
