//! A model's config.pbtxt (and the same bytes as the JSON config of a load request's override), then what
//! loading does with a parsed config short of opening a model file: auto-complete from the model's declared
//! tensors (a stand-in here), the default instance group, the model spec, instance placement, the batch and
//! queue policy, the version statistics and the traffic policy. Also: the config as the server serves it
//! (`GET .../config`) parses back to the same config.
#![no_main]

use inferd::backend::{DeclaredIo, DeclaredTensor};
use inferd::spec::ModelSpec;
use inferd::proto::{model_instance_group::Kind, ModelConfig, ModelInstanceGroup};
use inferd::repository::autocomplete::complete;
use inferd::repository::config::{parse_json, parse_pbtxt, to_json};
use inferd::repository::placement::{placements, Gpus, MAX_INSTANCES};
use inferd::scheduler::BatchPolicy;
use inferd::stats::Stats;
use inferd::tensor::DataType;
use inferd::traffic::TrafficPolicy;
use libfuzzer_sys::fuzz_target;
use std::time::Duration;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    for parsed in [parse_pbtxt(text), parse_json(text)] {
        if let Ok(cfg) = parsed {
            round_trip(&cfg);
            load(cfg);
        }
    }
});

/// `to_json` (how the server writes a config) and `parse_json` (how it reads one back) are inverses.
fn round_trip(cfg: &ModelConfig) {
    let json = to_json(cfg, "inference.ModelConfig");
    let back = parse_json(&json.to_string()).unwrap_or_else(|e| panic!("served config {json} does not parse: {e}"));
    // NaN (written "NaN") reads back as NaN, which equals nothing: compare the JSON then.
    if back != *cfg {
        assert_eq!(to_json(&back, "inference.ModelConfig"), json);
        assert!(json.to_string().contains("NaN"), "{json}");
    }
}

/// A model file's declared tensors, as the ONNX backend reports them: `[-1, 4]` batches, `[3, 4]` does not.
fn declared(first: i64) -> DeclaredIo {
    let t = |name: &str| DeclaredTensor {
        name: name.into(),
        datatype: Some(DataType::Fp32),
        shape: vec![first, 4],
    };
    DeclaredIo {
        inputs: vec![t("x")],
        outputs: vec![t("y")],
    }
}

/// `repository::prepare` then `repository::load_version` and `lifecycle::entry_from`, without backends.
fn load(mut cfg: ModelConfig) {
    if cfg.name.is_empty() {
        cfg.name = "model".into();
    }
    if cfg.input.is_empty() || cfg.output.is_empty() {
        let first = if cfg.max_batch_size == 0 { 3 } else { -1 };
        if complete(&mut cfg, &declared(first)).is_err() {
            return;
        }
    }
    if cfg.instance_group.is_empty() {
        cfg.instance_group.push(ModelInstanceGroup {
            count: 1,
            kind: Kind::Cpu as i32,
            ..Default::default()
        });
    }
    let Ok(spec) = ModelSpec::from_config(&cfg) else {
        return;
    };
    for t in spec.inputs.iter().chain(&spec.outputs) {
        assert!(t.dims.iter().all(|&d| d >= -1));
        assert_eq!(spec.metadata_shape(t).len(), t.dims.len() + usize::from(spec.batches()));
    }
    let Ok(policy) = BatchPolicy::from_config(&cfg) else {
        return;
    };
    assert!(!policy.levels.is_empty());
    assert!((1..=policy.levels.len()).contains(&policy.default_priority));
    assert!(policy
        .preferred_batch_sizes
        .iter()
        .all(|&p| p >= 1 && p <= policy.max_batch_size));
    for gpus in [vec![], vec![0, 1]] {
        let gpus = Gpus {
            why_none: gpus.is_empty().then(|| "no GPU".to_string()),
            present: gpus,
        };
        if let Ok(p) = placements(&spec.name, &cfg, &gpus) {
            assert!(!p.is_empty() && p.len() <= MAX_INSTANCES);
        }
    }
    let stats = Stats::new(policy.max_batch_size, true);
    assert!(stats.batch_statistics().is_empty());
    let rows = policy.max_batch_size.max(1);
    stats.record_execution(rows, 1, Duration::ZERO, Duration::from_micros(1), Duration::ZERO);
    let batches = stats.batch_statistics();
    assert!(batches.len() == 1 && batches[0].batch_size == rows as u64);
    if let Ok(traffic) = TrafficPolicy::from_config(&cfg) {
        let _ = traffic.check(|v| v == 1 || v == 2);
        for draw in [0, 1, u64::MAX] {
            if let Some(v) = traffic.pick(None, draw) {
                assert!(traffic.weights.get(&v).is_some_and(|&w| w > 0));
            }
            let _ = traffic.shadow_for(1, draw);
        }
        let _ = traffic.pick(Some(&cfg.name), 0);
    }
}
