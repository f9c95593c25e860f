//! `inferd profile`, run as a user runs it: reference data written here (.npy, .npz, JSON lines) goes through a
//! temporary copy of the example models, and the profile it writes is what the server's drift monitor reads.
//! Every mistake in the data is a clear error naming the file and what is wrong, with a failing exit status.
use std::path::{Path, PathBuf};
use std::process::Output;

use inferd::health::profile::Profile;
use inferd::repository::config::parse_pbtxt;
use inferd::spec::ModelSpec;
use ndarray::{Array2, ArrayD};
use ndarray_npy::{NpzWriter, WriteNpyExt};
use serde_json::Value;
use tempfile::TempDir;

/// A repository with copies of example models (config and version 1's model file only: no shipped profile).
fn repo(models: &[&str]) -> TempDir {
    let dir = tempfile::tempdir().expect("temporary folder");
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("models");
    for m in models {
        std::fs::create_dir_all(dir.path().join(m).join("1")).expect("model folder");
        for file in ["config.pbtxt", "1/model.onnx"] {
            std::fs::copy(examples.join(m).join(file), dir.path().join(m).join(file)).expect("model file copied");
        }
    }
    dir
}

fn profile(repo: &Path, model: &str, data: &Path, extra: &[&str]) -> Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_inferd"))
        .args(["profile", "--model-repository"])
        .arg(repo)
        .args(["--model", model, "--data"])
        .arg(data)
        .args(extra)
        .output()
        .expect("inferd runs")
}

fn succeeded(out: &Output) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "inferd profile failed: {stderr}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The error inferd printed, after checking that it failed cleanly (no panic) and wrote no profile.
fn refused(out: &Output, repo: &Path, model: &str) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        !out.status.success(),
        "inferd profile succeeded: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(!stderr.contains("panicked"), "a panic, not an error: {stderr}");
    assert!(
        !repo.join(model).join("1/profile.json").exists(),
        "a profile was written anyway"
    );
    stderr
}

/// Standard-normal values from a fixed seed (xorshift and Box–Muller), so every run profiles the same rows.
fn normal(rows: usize, cols: usize, seed: u64) -> Array2<f64> {
    let mut state = seed.max(1);
    let mut uniform = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        ((state >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    };
    Array2::from_shape_simple_fn((rows, cols), || {
        let (u, v) = (uniform(), uniform());
        (-2.0 * u.ln()).sqrt() * (2.0 * std::f64::consts::PI * v).cos()
    })
}

fn write_npy<A: ndarray_npy::WritableElement, D: ndarray::Dimension>(path: &Path, array: &ndarray::Array<A, D>) {
    let file = std::fs::File::create(path).expect("npy created");
    array.write_npy(file).expect("npy written");
}

fn read_profile(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).expect("profile written");
    assert!(text.ends_with("}\n"), "pretty JSON with a newline at the end");
    serde_json::from_str(&text).expect("profile is JSON")
}

fn spec(repo: &Path, model: &str) -> ModelSpec {
    let text = std::fs::read_to_string(repo.join(model).join("config.pbtxt")).expect("config");
    ModelSpec::from_config(&parse_pbtxt(&text).expect("config parses")).expect("spec")
}

fn shares_sum_to_one(feature: &Value) -> usize {
    let shares: Vec<f64> = feature["shares"]
        .as_array()
        .expect("shares")
        .iter()
        .map(|s| s.as_f64().expect("a share"))
        .collect();
    assert!((shares.iter().sum::<f64>() - 1.0).abs() < 1e-9, "{feature}");
    shares.len()
}

fn edges(feature: &Value) -> Vec<f64> {
    feature["edges"]
        .as_array()
        .expect("edges")
        .iter()
        .map(|e| e.as_f64().expect("an edge"))
        .collect()
}

#[test]
fn float_rows_from_an_npy_profile_each_input_element_by_deciles_and_a_classifier_by_class_shares() {
    let repo = repo(&["mlp"]);
    let data = repo.path().join("reference.npy");
    write_npy(&data, &normal(500, 64, 7).mapv(|v| v as f32));

    let out = profile(repo.path(), "mlp", &data, &["--classifier", "OUTPUT"]);

    let written = repo.path().join("mlp/1/profile.json");
    let line = succeeded(&out);
    assert!(
        line.contains(&written.display().to_string()) && line.contains("500"),
        "{line}"
    );
    let p = read_profile(&written);
    assert_eq!(p["format"], "inferd-profile/1");
    assert_eq!(p["model"], "mlp");
    assert_eq!(p["rows"], 500);
    assert_eq!(p["source"], "reference.npy");
    let input = &p["inputs"][0];
    assert_eq!(
        (input["name"].as_str(), input["kind"].as_str()),
        (Some("INPUT"), Some("elements"))
    );
    let features = input["features"].as_array().expect("features");
    assert_eq!(features.len(), 64);
    for (i, f) in features.iter().enumerate() {
        assert_eq!(f["name"], i.to_string());
        assert_eq!(shares_sum_to_one(f), 10);
        let e = edges(f);
        assert_eq!(e.len(), 9);
        assert!(e.windows(2).all(|w| w[0] <= w[1]), "edges sorted: {e:?}");
        // Standard-normal data: the median edge near 0, the outer deciles near ±1.28.
        assert!(
            e[4].abs() < 0.3 && (e[0] + 1.28).abs() < 0.4 && (e[8] - 1.28).abs() < 0.4,
            "{e:?}"
        );
    }
    let output = &p["outputs"][0];
    assert_eq!(
        (output["name"].as_str(), output["kind"].as_str()),
        (Some("OUTPUT"), Some("classes"))
    );
    let class = &output["features"][0];
    assert_eq!(class["name"], "class");
    assert_eq!(shares_sum_to_one(class), 10, "one share per class");
    assert!(edges(class).is_empty());

    // What the server will load.
    let profile = Profile::read(&written).expect("the server reads it");
    profile
        .check(&spec(repo.path(), "mlp"), &written)
        .expect("it fits the model");
}

#[test]
fn npz_arrays_go_to_the_input_of_their_name_and_float64_data_feeds_an_fp32_input() {
    let repo = repo(&["mlp"]);
    let data = repo.path().join("reference.npz");
    let mut npz = NpzWriter::new(std::fs::File::create(&data).expect("npz created"));
    npz.add_array("INPUT", &normal(101, 64, 11)).expect("array added");
    npz.finish().expect("npz written");
    let out_path = repo.path().join("elsewhere.json");

    // 101 rows in batches of 7 leaves a short last batch.
    let out = profile(
        repo.path(),
        "mlp",
        &data,
        &["--out", out_path.to_str().expect("path"), "--batch", "7"],
    );

    succeeded(&out);
    assert!(
        !repo.path().join("mlp/1/profile.json").exists(),
        "--out puts it elsewhere"
    );
    let p = read_profile(&out_path);
    assert_eq!(p["rows"], 101);
    assert_eq!(p["inputs"][0]["features"].as_array().map(Vec::len), Some(64));
    // Without --classifier (and no label file, no "embed" in its name) the output is profiled element by element.
    let output = &p["outputs"][0];
    assert_eq!(output["kind"], "elements");
    assert_eq!(output["features"].as_array().map(Vec::len), Some(10));
}

#[test]
fn json_lines_are_infer_requests_checked_as_the_server_checks_them() {
    let repo = repo(&["mlp"]);
    let data = repo.path().join("reference.jsonl");
    let rows = normal(90, 64, 3);
    let request = |from: usize, to: usize| {
        let flat: Vec<f64> = rows.slice(ndarray::s![from..to, ..]).iter().copied().collect();
        serde_json::json!({"inputs": [{"name": "INPUT", "datatype": "FP32", "shape": [to - from, 64], "data": flat}]})
    };
    // One request of more rows than max_batch_size (64), and one of a single row.
    std::fs::write(&data, format!("{}\n\n{}\n", request(0, 89), request(89, 90))).expect("data written");

    succeeded(&profile(repo.path(), "mlp", &data, &[]));
    assert_eq!(read_profile(&repo.path().join("mlp/1/profile.json"))["rows"], 90);

    std::fs::write(
        &data,
        format!(
            "{}\n{}\n",
            request(0, 2),
            r#"{"inputs":[{"name":"INPUT","datatype":"FP32","shape":[1,63],"data":[0]}]}"#
        ),
    )
    .expect("data written");
    std::fs::remove_file(repo.path().join("mlp/1/profile.json")).expect("removed");
    let err = refused(&profile(repo.path(), "mlp", &data, &[]), repo.path(), "mlp");
    assert!(
        err.contains("reference.jsonl: line 2: unexpected shape for input 'INPUT'"),
        "{err}"
    );
}

#[test]
fn an_npz_array_named_for_no_input_is_refused_naming_the_array_and_the_inputs() {
    let repo = repo(&["mlp"]);
    let data = repo.path().join("wrong_name.npz");
    let mut npz = NpzWriter::new(std::fs::File::create(&data).expect("npz created"));
    npz.add_array("INPUTS", &normal(10, 64, 1).mapv(|v| v as f32))
        .expect("array added");
    npz.finish().expect("npz written");

    let err = refused(&profile(repo.path(), "mlp", &data, &[]), repo.path(), "mlp");

    assert!(err.contains("wrong_name.npz"), "{err}");
    assert!(
        err.contains("array 'INPUTS' is not an input of model 'mlp' (its inputs: INPUT)"),
        "{err}"
    );
}

#[test]
fn rows_of_the_wrong_width_are_refused_naming_both_shapes() {
    let repo = repo(&["mlp"]);
    let data = repo.path().join("narrow.npy");
    write_npy(&data, &normal(10, 63, 1).mapv(|v| v as f32));

    let err = refused(&profile(repo.path(), "mlp", &data, &[]), repo.path(), "mlp");

    assert!(err.contains("narrow.npy"), "{err}");
    assert!(
        err.contains("rows of shape [63]") && err.contains("takes rows of shape [64]"),
        "{err}"
    );
}

#[test]
fn integers_for_a_float_input_are_refused_rather_than_converted() {
    let repo = repo(&["mlp"]);
    let data = repo.path().join("ints.npy");
    write_npy(&data, &Array2::<i32>::zeros((10, 64)));

    let err = refused(&profile(repo.path(), "mlp", &data, &[]), repo.path(), "mlp");

    assert!(
        err.contains("holds int32 values; input 'INPUT' is FP32: give float32 or float64 data"),
        "{err}"
    );
}

#[test]
fn every_input_of_an_npz_needs_the_same_rows_and_a_too_wide_integer_is_refused() {
    let repo = repo(&["simple"]);
    let data = repo.path().join("mixed.npz");
    let mut npz = NpzWriter::new(std::fs::File::create(&data).expect("npz created"));
    npz.add_array("INPUT0", &Array2::<i32>::ones((10, 16)))
        .expect("array added");
    npz.add_array("INPUT1", &Array2::<i32>::ones((9, 16)))
        .expect("array added");
    npz.finish().expect("npz written");

    let err = refused(&profile(repo.path(), "simple", &data, &[]), repo.path(), "simple");
    assert!(
        err.contains("array 'INPUT1' has 9 rows but array 'INPUT0' has 10"),
        "{err}"
    );

    // int64 narrows to the INT32 inputs while the values fit, and is refused when one does not.
    let data = repo.path().join("wide.npz");
    let mut big = Array2::<i64>::ones((4, 16));
    let mut npz = NpzWriter::new(std::fs::File::create(&data).expect("npz created"));
    npz.add_array("INPUT0", &big).expect("array added");
    big[[3, 5]] = 1 << 40;
    npz.add_array("INPUT1", &big).expect("array added");
    npz.finish().expect("npz written");
    let err = refused(&profile(repo.path(), "simple", &data, &[]), repo.path(), "simple");
    assert!(
        err.contains("array 'INPUT1' holds 1099511627776, which does not fit input 'INPUT1' (INT32)"),
        "{err}"
    );
}

#[test]
fn a_model_that_does_not_load_or_an_output_it_lacks_is_named() {
    let repo = repo(&["mlp"]);
    let data = repo.path().join("reference.npy");
    write_npy(&data, &ArrayD::<f32>::zeros(vec![4, 64]));

    let err = refused(
        &profile(repo.path(), "mlp", &data, &["--classifier", "LOGITS"]),
        repo.path(),
        "mlp",
    );
    assert!(
        err.contains("--classifier LOGITS: model 'mlp' has no output 'LOGITS' (its outputs: OUTPUT)"),
        "{err}"
    );

    let err = refused(&profile(repo.path(), "nope", &data, &[]), repo.path(), "nope");
    assert!(err.contains("model 'nope' is not in"), "{err}");

    std::fs::write(repo.path().join("mlp/config.pbtxt"), "max_batch_size: [ oops").expect("config broken");
    let err = refused(&profile(repo.path(), "mlp", &data, &[]), repo.path(), "mlp");
    assert!(
        err.contains("model 'mlp' does not load") && err.contains("config.pbtxt"),
        "{err}"
    );
}

#[test]
fn a_profile_can_be_made_for_a_version_the_policy_does_not_serve_yet() {
    let repo = repo(&["mlp"]);
    let two: PathBuf = repo.path().join("mlp/0");
    std::fs::create_dir_all(&two).expect("version folder");
    std::fs::copy(repo.path().join("mlp/1/model.onnx"), two.join("model.onnx")).expect("model copied");
    let data = repo.path().join("reference.npy");
    write_npy(&data, &normal(20, 64, 5).mapv(|v| v as f32));

    let line = succeeded(&profile(repo.path(), "mlp", &data, &["--version", "0"]));

    assert!(line.contains("version 0"), "{line}");
    assert_eq!(read_profile(&two.join("profile.json"))["rows"], 20);
    let err = refused(
        &profile(repo.path(), "mlp", &data, &["--version", "5"]),
        repo.path(),
        "mlp",
    );
    assert!(err.contains("model 'mlp' has no version 5"), "{err}");
}

#[test]
fn text_rows_are_split_into_batches_at_their_own_elements_and_profiled_by_length() {
    let repo = repo(&["simple_string"]);
    let data = repo.path().join("numbers.jsonl");
    let request = |rows: std::ops::Range<i32>| {
        let n = rows.len();
        let a: Vec<String> = rows.flat_map(|r| std::iter::repeat_n(r.to_string(), 16)).collect();
        let b = vec!["10"; 16 * n];
        serde_json::json!({"inputs": [
            {"name": "INPUT0", "datatype": "BYTES", "shape": [n, 16], "data": a},
            {"name": "INPUT1", "datatype": "BYTES", "shape": [n, 16], "data": b}
        ]})
    };
    std::fs::write(&data, format!("{}\n{}\n", request(0..5), request(5..8))).expect("data written");

    // Batches of 3 over 8 rows cut through both requests.
    succeeded(&profile(repo.path(), "simple_string", &data, &["--batch", "3"]));

    let p = read_profile(&repo.path().join("simple_string/1/profile.json"));
    assert_eq!(p["rows"], 8);
    let chars = |t: &Value| {
        assert_eq!(t["kind"], "length");
        assert_eq!(
            t["features"].as_array().map(Vec::len),
            Some(1),
            "no tokenizer: characters only"
        );
        (t["features"][0]["min"].as_f64(), t["features"][0]["max"].as_f64())
    };
    // Row r: sixteen times "r" and "10"; answered with r + 10 ("10".."17") and r - 10 ("-10".."-3").
    assert_eq!(chars(&p["inputs"][0]), (Some(16.0), Some(16.0)));
    assert_eq!(chars(&p["inputs"][1]), (Some(32.0), Some(32.0)));
    assert_eq!(chars(&p["outputs"][0]), (Some(32.0), Some(32.0)));
    assert_eq!(chars(&p["outputs"][1]), (Some(32.0), Some(48.0)));
}
