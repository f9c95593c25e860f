//! What metrics add to one request, in-process: the statistics a request records on its way (routed and in
//! flight, queue wait, one execution, its duration), with the metrics-only figures kept and without them
//! (`--allow-metrics false`); and what one scrape costs the server (render the page for the example models).
//! Compare with the server's CPU per request in benches/RESULTS.md.
use std::sync::Arc;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};
use inferd::backend::ort::{find_library, OrtBackend};
use inferd::backend::Backend;
use inferd::metrics::Metrics;
use inferd::request::Protocol;
use inferd::stats::{Arm, Stats};

mod support;

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
    let (_rt, lifecycle, serving) = support::example_serving(vec![backend], None);
    let metrics = Metrics::new();
    c.bench_function("scrape (render /metrics, example models)", |b| {
        b.iter(|| metrics.render(&serving, &lifecycle).len())
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
