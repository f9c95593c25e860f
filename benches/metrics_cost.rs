//! What metrics add to one request, in-process: the statistics a request records on its way (routed and in
//! flight, queue wait, one execution, its duration), with the metrics-only figures kept and without them
//! (`--allow-metrics false`); and what one scrape costs the server (render the page for the example models).
//! Compare with the server's CPU per request in benches/RESULTS.md.
use std::sync::Arc;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};
use inferd::backend::ort::{find_library, OrtBackend};
use inferd::backend::Backend;
use inferd::lifecycle::{Lifecycle, LifecycleConfig};
use inferd::metrics::Metrics;
use inferd::request::Protocol;
use inferd::routing::Routes;
use inferd::serving::{Serving, ServingConfig};
use inferd::stats::{Arm, Stats};

fn one_request(s: &Stats) {
    let inflight = s.start_request(Arm::Split);
    s.record_queue(Duration::from_micros(12));
    s.record_execution(
        1,
        1,
        Duration::from_micros(1),
        Duration::from_micros(3),
        Duration::from_micros(1),
    );
    drop(inflight);
    s.record_success(Protocol::Grpc, Duration::from_micros(40));
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("request statistics");
    for (name, detailed) in [("metrics on", true), ("metrics off", false)] {
        let stats = Stats::new(8, detailed);
        g.bench_function(name, |b| b.iter(|| one_request(std::hint::black_box(&stats))));
    }
    g.finish();

    let library = find_library(None).expect("run `make setup` first");
    let backend: Arc<dyn Backend> = Arc::new(OrtBackend::new(library, 1).expect("ONNX Runtime loads"));
    let repo = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("models");
    let routes = Arc::new(Routes::default());
    let lifecycle = Arc::new(Lifecycle::new(
        routes.clone(),
        LifecycleConfig {
            registry: Arc::new(inferd::registry::Registry::local(vec![repo])),
            backends: vec![backend],
            detailed_metrics: true,
        },
    ));
    let serving = Serving::new(
        routes,
        ServingConfig {
            server_id: "bench".into(),
            strict_readiness: true,
            max_inflight: 0,
            max_tensor_elements: u64::MAX,
        },
    );
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(lifecycle.load_repository(None))
        .expect("the example models load");
    let metrics = Metrics::new();
    c.bench_function("scrape (render /metrics, example models)", |b| {
        b.iter(|| metrics.render(&serving, &lifecycle).len())
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
