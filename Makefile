# The two commands a new user needs: `make serve` and `make test`. Each installs what it needs first.
CARGO ?= cargo
HTTP_PORT ?= 8000
GRPC_PORT ?= 8001
METRICS_PORT ?= 8002

.PHONY: setup build serve test test-rust test-interop bench bench-overhead profile bench-metrics bench-health bench-registry bench-overload bench-protocol bench-embeddings soak triton-examples fuzz fmt clean

setup:
	@scripts/setup.sh

build: setup
	$(CARGO) build --release --locked

serve: build
	./target/release/inferd serve --model-repository models --tei-model all-MiniLM-L6-v2 \
		--http-port $(HTTP_PORT) --grpc-port $(GRPC_PORT) --metrics-port $(METRICS_PORT)

# Tests that need what setup installs (MiniLM, the Python packages) fail rather than skip when it is missing.
test: export INFERD_REQUIRE_FIXTURES = 1
test: setup
	# The real stores the remote-repository tests run against: an S3-compatible server and an MLflow server.
	scripts/setup_registry.sh
	# Chromium for the dashboard test (tests/interop/test_dashboard.py), from Debian's packages.
	scripts/setup_browser.sh
	$(CARGO) fmt --all -- --check
	$(CARGO) test --locked
	$(CARGO) build --locked --bin inferd
	# ONNX Runtime's CUDA provider, GPU discovery and metrics build without any CUDA file; without a GPU the
	# GPU tests say so and the CPU fallbacks are checked.
	$(CARGO) test --locked --features cuda-ort --test gpu
	# ONNX files on candle (its build compiles ONNX's proto with the vendored protoc).
	PROTOC=$$(scripts/protoc-path.sh) $(CARGO) test --locked --features candle-onnx --test candle_onnx
	.venv/bin/python -m pytest -q tests/interop
	# Every fuzz target for 10 s (cargo-fuzz needs the nightly toolchain; a machine without it says so).
	@if cargo +nightly --version >/dev/null 2>&1; then $(MAKE) fuzz FUZZ_SECONDS=10; \
	else echo "fuzz smoke run SKIPPED: no nightly toolchain (rustup toolchain install nightly)"; fi

bench: setup
	scripts/bench.sh

# inferd before and after a change beside the Triton peer, small and large tensors (issue 17; benches/RESULTS.md,
# "Serving overhead"). BEFORE: the binary before the change, e.g. a copy kept from the last build (default: this
# build against itself). The peer's first install takes a few minutes; the run about 15.
BEFORE ?= target/release/inferd
bench-overhead: build
	scripts/bench_overhead.py --before $(BEFORE) --after target/release/inferd --rounds 3 --record

# perf profiles of the release server under perf_analyzer (identity, HTTP and gRPC, c=1 and 32): flame graphs
# and hottest functions in benches/flamegraphs/.
profile: build
	scripts/profile.sh

# Metrics on against --allow-metrics false, perf_analyzer at c=32 (benches/RESULTS.md, "Cost of metrics").
bench-metrics: build
	scripts/bench_metrics.py

# Drift watching and value rules on against off, perf_analyzer at c=32 (benches/RESULTS.md, "Cost of model health").
bench-health: build
	scripts/bench_health.py

# Shared memory against binary tensors on FP32 1x3x224x224 (identity backend); perf_analyzer's sequence mode.
bench-protocol: build
	scripts/bench_protocol.py

# Text embeddings through the OpenAI and TEI routes beside V2 and raw ONNX Runtime, c=1/8/32 (benches/RESULTS.md,
# "Text embeddings: OpenAI and TEI routes").
bench-embeddings: build
	scripts/bench_embeddings.py

# Time to ready from S3 (cold, warm cache) and from disk; one poll of 100 models (benches/RESULTS.md).
bench-registry: build
	scripts/setup_registry.sh
	.venv/bin/python scripts/bench_registry.py --record

# Ten times MiniLM's capacity, then half of it (benches/RESULTS.md, "Overload").
bench-overload: build
	$(CARGO) bench --locked --bench overload -- --record

# 30 minutes of mixed traffic with a reload a minute; fails on a failed good request or memory growth.
soak: build
	.venv/bin/python scripts/soak.py --minutes 30 --record

# Triton's own Python client examples, unchanged, against inferd (needs a checkout of triton-inference-server/client;
# not part of `make test`, which cannot fetch it). TRITON_EXAMPLES: its src/python/examples folder.
TRITON_EXAMPLES ?= /work/triton-client/src/python/examples
triton-examples: build
	scripts/triton_examples.sh $(TRITON_EXAMPLES)

# Every cargo-fuzz target for FUZZ_SECONDS each (nightly toolchain; fuzz/).
FUZZ_SECONDS ?= 600
fuzz:
	scripts/fuzz.sh $(FUZZ_SECONDS)

clean:
	$(CARGO) clean
	rm -rf .venv .deps .perf_analyzer .peer
