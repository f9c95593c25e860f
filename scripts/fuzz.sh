#!/usr/bin/env bash
# Fuzzes the server's input parsers with cargo-fuzz (libFuzzer): every target in fuzz/Cargo.toml for N
# seconds each, one after the other, in one process each.
#
#   scripts/fuzz.sh [SECONDS] [TARGET...]     (default 60 seconds, every target; `scripts/fuzz.sh 10` in CI)
#
# Targets (fuzz/fuzz_targets/): json_request, binary_request, bytes_tensor, grpc_request, config_pbtxt.
# Needs the nightly toolchain (`rustup toolchain install nightly`); installs cargo-fuzz if it is missing.
# Each target starts from its committed seeds (fuzz/corpus/<target>/, left untouched) and writes what it
# finds into a scratch corpus, $FUZZ_WORK/<target> (default fuzz/target/fuzz-work, kept between runs so later
# runs start from there). A failure (panic, abort, leak, over 2 GiB, an input taking over 10 s) leaves its
# input in fuzz/artifacts/<target>/ and makes the script exit non-zero after the remaining targets ran;
# replay one with `cd fuzz && cargo +nightly fuzz run <target> artifacts/<target>/<file>`.
# Environment: FUZZ_WORK, FUZZ_BUILD_JOBS (cargo build jobs, default 2), FUZZ_ARGS (more libFuzzer flags).
set -euo pipefail

cd "$(dirname "$0")/.."
root=$PWD
seconds=${1:-60}
shift || true
work=${FUZZ_WORK:-$root/fuzz/target/fuzz-work}

if ! [[ $seconds =~ ^[0-9]+$ ]] || ((seconds < 1)); then
    echo "usage: scripts/fuzz.sh [SECONDS] [TARGET...]" >&2
    exit 2
fi
if ! cargo +nightly --version >/dev/null 2>&1; then
    echo "fuzz.sh: the nightly toolchain is missing (rustup toolchain install nightly)" >&2
    exit 2
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "fuzz.sh: installing cargo-fuzz"
    cargo install cargo-fuzz --locked
fi

cd fuzz
if (($# > 0)); then
    targets=("$@")
else
    mapfile -t targets < <(cargo +nightly fuzz list)
fi
# The server's dependencies at the versions it ships with (the parsers fuzzed are partly theirs: serde_json,
# prost, prost-reflect); cargo adds libFuzzer's own.
cp ../Cargo.lock Cargo.lock
# -a: debug assertions and overflow checks, so an integer overflow on input is a failure too. The targets
# share one build of the server; the runs below reuse it.
export CARGO_BUILD_JOBS=${FUZZ_BUILD_JOBS:-2}
cargo +nightly fuzz build -a
failed=()
for t in "${targets[@]}"; do
    mkdir -p "$work/$t"
    log=$work/$t.log
    echo "== $t: ${seconds}s (log: $log)"
    # One fuzzing process (no -jobs/-fork: libFuzzer would spawn workers and send their output to files).
    # shellcheck disable=SC2086 # FUZZ_ARGS is a list of flags
    if cargo +nightly fuzz run -a "$t" "$work/$t" "corpus/$t" -- \
        -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -malloc_limit_mb=2048 \
        -print_final_stats=1 ${FUZZ_ARGS:-} >"$log" 2>&1; then
        grep -E '^(#[0-9]+\s+DONE|Done|stat::number_of_executed_units|stat::peak_rss_mb)' "$log" || tail -n 5 "$log"
    else
        cat "$log"
        failed+=("$t")
    fi
done
if ((${#failed[@]} > 0)); then
    echo "fuzz.sh: failures in: ${failed[*]} (inputs in fuzz/artifacts/)" >&2
    exit 1
fi
echo "fuzz.sh: ${#targets[@]} targets, ${seconds}s each, no failure"
