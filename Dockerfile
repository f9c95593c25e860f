# syntax=docker/dockerfile:1
# inferd: the release binary and ONNX Runtime's library on a slim Debian, run as a non-root user.
#
#   docker build -t ghcr.io/inferd/inferd:0.1.0 .
#   docker run --rm --read-only --tmpfs /tmp -p 8000-8002:8000-8002 -v "$PWD/models:/models:ro" \
#     ghcr.io/inferd/inferd:0.1.0
#
# Serves the Triton-style model repository at /models (a volume; the image holds the small committed
# examples, not the MiniLM weights that `make setup` downloads). Arguments after the image name are
# `inferd serve` flags. `scripts/docker-check.sh` runs this file's build steps without Docker.

# Builder and runtime are both Debian 12, so the binary and the wheel's library find the glibc they were
# built against. Pin by digest (`@sha256:...`) when publishing.
FROM rust:1.95.0-slim-bookworm AS build
WORKDIR /src

# python3 only to unpack ONNX Runtime's PyPI wheel. Debian's versions are not pinned: a bookworm point
# release or security update removes the old version from the archive, which would break the build.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 python3-venv \
 && rm -rf /var/lib/apt/lists/*

# libonnxruntime.so.1.31.1 from the same wheel `make setup` uses (the server loads it at start).
RUN python3 -m venv /opt/ort \
 && /opt/ort/bin/pip install --no-cache-dir --no-deps onnxruntime==1.31.1 \
 && cp /opt/ort/lib/python3*/site-packages/onnxruntime/capi/libonnxruntime.so.1.31.1 /opt/

# Only what the build reads (benches/ because Cargo.toml names bench targets); .dockerignore keeps the
# context to these and models/.
COPY Cargo.toml Cargo.lock build.rs ./
COPY proto proto
COPY server server
COPY benches benches
# The cache mounts keep crates and compiled dependencies between builds; the binary is copied out of the
# target cache in the same step.
RUN --mount=type=cache,target=/usr/local/cargo/registry,sharing=locked \
    --mount=type=cache,target=/src/target,sharing=locked \
    cargo build --release --locked --bin inferd \
 && cp target/release/inferd /opt/inferd

FROM debian:bookworm-slim
# curl for the HEALTHCHECK; libstdc++6 (ONNX Runtime's one dependency beyond glibc) is in the base image
# already and named so that it stays. Kubernetes' preStop hook runs `sleep` (coreutils, always there).
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates curl libstdc++6 \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 inferd \
 && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
      --shell /usr/sbin/nologin inferd

# The server finds the library in ../lib beside its binary's folder (and in /usr/local/lib).
COPY --from=build /opt/inferd /usr/local/bin/inferd
COPY --from=build /opt/libonnxruntime.so.1.31.1 /usr/local/lib/libonnxruntime.so.1.31.1
COPY models /models

LABEL org.opencontainers.image.title="inferd" \
      org.opencontainers.image.description="KServe V2 / Triton-compatible inference server" \
      org.opencontainers.image.licenses="Apache-2.0"
ENV INFERD_MODEL_REPOSITORY=/models
# Nothing is written at run time except model loads that send their files, staged under $TMPDIR (/tmp):
# with --read-only give it a tmpfs.
USER 10001:10001
# HTTP/REST, gRPC, Prometheus metrics.
EXPOSE 8000 8001 8002
VOLUME ["/models"]
# 503 while models load or while draining on SIGTERM. With another --http-port or TLS, override it
# (`docker run --health-cmd ...`). Kubernetes ignores it and uses the probes in deploy/kubernetes.
HEALTHCHECK --interval=10s --timeout=3s --start-period=60s --retries=3 \
  CMD ["curl", "--fail", "--silent", "--show-error", "--max-time", "2", "--output", "/dev/null", "http://127.0.0.1:8000/v2/health/ready"]
# SIGTERM: inferd turns not-ready, drains requests in flight (--exit-timeout-secs) and exits 0.
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/inferd", "serve"]
