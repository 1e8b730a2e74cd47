# syntax=docker/dockerfile:1
# The scanfleet worker image:   docker build -t scanfleet:0.1.0 .
# Linted by scripts/check-deploy.sh (hadolint, checkov); deployed by deploy/ (docs/DEPLOY.md).

# Build on Debian 12 (bookworm), the same glibc as the distroless runtime below.
FROM rust:1.95-bookworm AS builder
WORKDIR /src
# The whole context minus what .dockerignore keeps out (target/, .git/, .venv/, deploy/, ...):
# Cargo.toml and Cargo.lock, src/, and config/default.toml, which the binary compiles in.
COPY . .
# The crate registry and target/ are BuildKit caches, so rebuilds after a source change only
# recompile scanfleet itself. The binary is copied out of the cache mount to /out.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/usr/local/cargo/git \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin scanfleet \
    && install -D -m 0755 target/release/scanfleet /out/scanfleet

# Runtime: glibc, libgcc and CA certificates (for HTTPS to AWS), no shell, no package manager.
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=builder /out/scanfleet /scanfleet
# distroless's "nonroot" user, by number so Kubernetes' runAsNonRoot can verify it. The
# process writes no files, so the image runs with a read-only root filesystem.
USER 65532:65532
# /metrics, /healthz and /readyz (metrics.listen).
EXPOSE 9090
# No HEALTHCHECK: Kubernetes ignores it and probes /healthz and /readyz itself
# (deploy/base/deployment.yaml); the image has no shell or curl to run one with.
# checkov:skip=CKV_DOCKER_2:Kubernetes liveness/readiness probes replace HEALTHCHECK, which it ignores
# `docker run IMAGE` runs the worker; `docker run IMAGE enqueue --table T --segments N` enqueues.
ENTRYPOINT ["/scanfleet"]
CMD ["worker"]
