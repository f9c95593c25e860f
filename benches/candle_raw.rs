//! MiniLM (all-MiniLM-L6-v2, placed by `make setup`) in-process on CPU, at batch 1, 8 and 32 of the same
//! sentences perf_analyzer sends (benches/minilm_input.json): once straight through candle and tokenizers
//! (tokenize, BERT, mean pooling, normalisation — the floor any server pays) and once through inferd's
//! `Backend` instance (what the scheduler calls). Threads: RAYON_NUM_THREADS (1 from .cargo/config.toml).
mod support;

use candle_core::Device;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use inferd::backend::candle::CandleBackend;
use inferd::backend::{Backend, BatchInput, BatchOutput, Placement};
use inferd::repository::{prepare, ModelSource};
use inferd::tensor::{push_bytes_element, DataType};
use support::{root, sentences, RawMiniLm};

fn bench(c: &mut Criterion) {
    let dir = root().join("models/minilm/1");
    if !dir.join("model.safetensors").is_file() {
        eprintln!("skipped: models/minilm/1 is missing; run `make setup` to place MiniLM");
        return;
    }
    let raw = RawMiniLm::load(&dir, &Device::Cpu);

    let backend = CandleBackend::new();
    let src = ModelSource {
        name: inferd::model_name::ModelName::parse("minilm").unwrap(),
        dir: root().join("models/minilm"),
    };
    let prepared = prepare(
        &src,
        None,
        &[std::sync::Arc::new(CandleBackend::new()) as std::sync::Arc<dyn Backend>],
    )
    .unwrap();
    let file = prepared.versions[0].1.clone();
    let mut instance = backend
        .instantiate(&file, &prepared.spec, &prepared.config, Placement::Cpu)
        .unwrap();

    let all = sentences();
    let mut group = c.benchmark_group("minilm");
    group.sample_size(20);
    for batch in [1usize, 8, 32] {
        let texts: Vec<&str> = all.iter().cycle().take(batch).map(String::as_str).collect();
        group.throughput(Throughput::Elements(batch as u64));
        group.bench_with_input(BenchmarkId::new("candle_raw", batch), &batch, |b, _| {
            b.iter(|| criterion::black_box(raw.embed(&texts)))
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
