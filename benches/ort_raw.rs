//! In-process ONNX Runtime on the example MLP, at batch 1 and 32: once straight through `ort` (the floor any
//! server pays) and once through inferd's `Backend` instance (what the scheduler calls). The gap between
//! these and perf_analyzer's end-to-end latency is the serving overhead (see benches/RESULTS.md).
use std::path::PathBuf;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use inferd::backend::ort::{find_library, OrtBackend};
use inferd::backend::{Backend, BatchInput, BatchOutput, Placement};
use inferd::repository::{prepare, ModelSource};
use inferd::tensor::DataType;
use ort::session::Session;
use ort::value::TensorRef;

fn mlp() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("models/mlp")
}

fn inputs(batch: usize) -> Vec<f32> {
    (0..batch * 64)
        .map(|i| ((i * 7919) % 1000) as f32 / 500.0 - 1.0)
        .collect()
}

fn bench(c: &mut Criterion) {
    let library = find_library(None).expect("run `make setup` first");
    let backend = std::sync::Arc::new(OrtBackend::new(library.clone(), 1).expect("ONNX Runtime loads"));
    let src = ModelSource {
        name: inferd::model_name::ModelName::parse("mlp").unwrap(),
        dir: mlp(),
    };
    let prepared = prepare(&src, None, &[backend.clone() as std::sync::Arc<dyn Backend>]).unwrap();
    let file = prepared.versions[0].1.clone();
    let mut instance = backend
        .instantiate(&file, &prepared.spec, &prepared.config, Placement::Cpu)
        .unwrap();
    // The same session settings the backend uses, without the backend around it.
    let env = inferd::backend::ort::environment(&library).expect("environment");
    let mut session = Session::builder(&env)
        .unwrap()
        .with_intra_threads(1)
        .unwrap()
        .with_inter_threads(1)
        .unwrap()
        .commit_from_file(&file)
        .unwrap();

    let mut group = c.benchmark_group("mlp");
    for batch in [1usize, 32] {
        let data = inputs(batch);
        group.throughput(Throughput::Elements(batch as u64));
        group.bench_with_input(BenchmarkId::new("ort_session_run", batch), &batch, |b, &batch| {
            b.iter(|| {
                let x = TensorRef::from_array_view(([batch, 64], &data[..])).unwrap();
                let out = session.run(ort::inputs!["INPUT" => x]).unwrap();
                let (_, y) = out["OUTPUT"].try_extract_tensor::<f32>().unwrap();
                criterion::black_box(y[0]);
            })
        });
        let shape = [batch as i64, 64];
        let bytes: &[u8] = bytemuck::cast_slice(&data);
        let mut outputs: Vec<BatchOutput> = Vec::new();
        group.bench_with_input(BenchmarkId::new("inferd_instance", batch), &batch, |b, _| {
            b.iter(|| {
                let input = BatchInput {
                    name: "INPUT",
                    datatype: DataType::Fp32,
                    shape: &shape,
                    data: bytes,
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
