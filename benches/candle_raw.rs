//! MiniLM (all-MiniLM-L6-v2, placed by `make setup`) in-process on CPU, at batch 1, 8 and 32 of the same
//! sentences perf_analyzer sends (benches/minilm_input.json): once straight through candle and tokenizers
//! (tokenize, BERT, mean pooling, normalisation — the floor any server pays) and once through inferd's
//! `Backend` instance (what the scheduler calls). Threads: RAYON_NUM_THREADS (1 from .cargo/config.toml).
use std::path::PathBuf;

use candle_core::{DType, Device, Tensor, D};
use candle_nn::VarBuilder;
use candle_transformers::models::bert::{BertModel, Config};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use inferd::backend::candle::CandleBackend;
use inferd::backend::{Backend, BatchInput, BatchOutput};
use inferd::repository::{prepare, ModelSource};
use inferd::tensor::{push_bytes_element, DataType};
use tokenizers::{PaddingParams, Tokenizer, TruncationParams};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The benchmark's sentences, from the same file perf_analyzer reads.
fn sentences() -> Vec<String> {
    let text = std::fs::read_to_string(root().join("benches/minilm_input.json")).expect("benches/minilm_input.json");
    let v: serde_json::Value = serde_json::from_str(&text).expect("JSON");
    v["data"]
        .as_array()
        .expect("data")
        .iter()
        .map(|d| d["TEXT"]["content"][0].as_str().expect("TEXT").to_string())
        .collect()
}

fn raw_embed(model: &BertModel, tokenizer: &Tokenizer, texts: Vec<&str>) -> Tensor {
    let enc = tokenizer.encode_batch(texts, true).unwrap();
    let (rows, len) = (enc.len(), enc[0].len());
    let ids: Vec<u32> = enc.iter().flat_map(|e| e.get_ids().to_vec()).collect();
    let mask: Vec<u32> = enc.iter().flat_map(|e| e.get_attention_mask().to_vec()).collect();
    let ids = Tensor::from_vec(ids, (rows, len), &Device::Cpu).unwrap();
    let mask = Tensor::from_vec(mask, (rows, len), &Device::Cpu).unwrap();
    let hidden = model.forward(&ids, &ids.zeros_like().unwrap(), Some(&mask)).unwrap();
    let m = mask.to_dtype(DType::F32).unwrap().unsqueeze(2).unwrap();
    let pooled = hidden
        .broadcast_mul(&m)
        .unwrap()
        .sum(1)
        .unwrap()
        .broadcast_div(&m.sum(1).unwrap())
        .unwrap();
    let norm = pooled.sqr().unwrap().sum_keepdim(D::Minus1).unwrap().sqrt().unwrap();
    pooled.broadcast_div(&norm).unwrap()
}

fn bench(c: &mut Criterion) {
    let dir = root().join("models/minilm/1");
    if !dir.join("model.safetensors").is_file() {
        eprintln!("skipped: models/minilm/1 is missing; run `make setup` to place MiniLM");
        return;
    }
    let config: Config = serde_json::from_str(&std::fs::read_to_string(dir.join("config.json")).unwrap()).unwrap();
    let weights = candle_core::safetensors::load(dir.join("model.safetensors"), &Device::Cpu).unwrap();
    let model = BertModel::load(VarBuilder::from_tensors(weights, DType::F32, &Device::Cpu), &config).unwrap();
    let mut tokenizer = Tokenizer::from_file(dir.join("tokenizer.json")).unwrap();
    tokenizer
        .with_truncation(Some(TruncationParams {
            max_length: 256,
            ..Default::default()
        }))
        .unwrap();
    tokenizer.with_padding(Some(PaddingParams::default()));

    let backend = CandleBackend::new();
    let src = ModelSource {
        name: "minilm".into(),
        dir: root().join("models/minilm"),
    };
    let prepared = prepare(
        &src,
        &[std::sync::Arc::new(CandleBackend::new()) as std::sync::Arc<dyn Backend>],
    )
    .unwrap();
    let file = prepared.versions[0].1.clone();
    let mut instance = backend.instantiate(&file, &prepared.spec, &prepared.config).unwrap();

    let all = sentences();
    let mut group = c.benchmark_group("minilm");
    group.sample_size(20);
    for batch in [1usize, 8, 32] {
        let texts: Vec<&str> = all.iter().cycle().take(batch).map(String::as_str).collect();
        group.throughput(Throughput::Elements(batch as u64));
        group.bench_with_input(BenchmarkId::new("candle_raw", batch), &batch, |b, _| {
            b.iter(|| criterion::black_box(raw_embed(&model, &tokenizer, texts.clone())))
        });
        let mut data = Vec::new();
        for t in &texts {
            push_bytes_element(&mut data, t.as_bytes());
        }
        let shape = [batch as i64, 1];
        let mut outputs: Vec<BatchOutput> = Vec::new();
        group.bench_with_input(BenchmarkId::new("inferd_instance", batch), &batch, |b, _| {
            b.iter(|| {
                let input = BatchInput {
                    name: "TEXT",
                    datatype: DataType::Bytes,
                    shape: &shape,
                    data: &data,
                };
                instance.execute(std::slice::from_ref(&input), &mut outputs).unwrap();
                criterion::black_box(outputs[0].data[0]);
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
