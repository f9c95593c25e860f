# syntax=docker/dockerfile:1
# Multi-stage: build the release binary, take ONNX Runtime's library from the PyPI wheel, and run as a
# non-root user on a slim base. Serves /models (mount a Triton-style repository there).

FROM rust:1.95-slim-bookworm AS build
WORKDIR /src
RUN apt-get update && apt-get install -y --no-install-recommends python3 python3-venv && rm -rf /var/lib/apt/lists/*
# ONNX Runtime's shared library, from the same wheel `make setup` uses.
RUN python3 -m venv /opt/ort && /opt/ort/bin/pip install --no-cache-dir onnxruntime==1.31.1 \
 && cp /opt/ort/lib/python3*/site-packages/onnxruntime/capi/libonnxruntime.so.1.31.1 /opt/libonnxruntime.so.1.31.1
COPY Cargo.toml Cargo.lock build.rs ./
COPY proto ./proto
COPY server ./server
COPY benches ./benches
RUN cargo build --release --locked --bin inferd

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates curl && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --no-create-home inferd
# The server finds the library beside its binary.
COPY --from=build /src/target/release/inferd /usr/local/bin/inferd
COPY --from=build /opt/libonnxruntime.so.1.31.1 /usr/local/bin/libonnxruntime.so.1.31.1
COPY models /models
USER inferd
EXPOSE 8000 8001 8002
VOLUME ["/models"]
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s CMD curl -fsS http://127.0.0.1:8000/v2/health/ready || exit 1
ENTRYPOINT ["/usr/local/bin/inferd", "serve"]
CMD ["--model-repository", "/models"]
