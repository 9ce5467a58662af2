# syntax=docker/dockerfile:1
#
# audience-gateway container image.
#
#   docker build -t audience-gateway:dev \
#     --build-arg VERSION="$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n1)" \
#     --build-arg REVISION="$(git rev-parse --short=12 HEAD)" .
#
# Stages follow the cargo-chef README: `planner` turns the manifests into recipe.json,
# `builder` compiles the dependencies from that recipe alone (a cached layer until
# Cargo.toml/Cargo.lock change), then the crate itself. The runtime is distroless cc
# (glibc + libgcc, no shell, no package manager) as non-root.
#
# scripts/check-deploy.sh --chef reads the ENV and `RUN cargo ...` lines below and runs
# them outside Docker, so a change here is exercised there too: keep each such command
# on a single line.
#
# No secrets are needed to build; none are passed as build args.

ARG RUST_IMAGE=rust:1.95-bookworm
ARG RUNTIME_IMAGE=gcr.io/distroless/cc-debian12:nonroot

FROM ${RUST_IMAGE} AS chef
# Same Debian release (bookworm = 12) as the runtime, so the glibc we link against is
# the one the binary finds at run time.
ARG CARGO_CHEF_VERSION=0.1.78
RUN cargo install cargo-chef --locked --version "${CARGO_CHEF_VERSION}"
WORKDIR /app

FROM chef AS planner
COPY . .
RUN cargo chef prepare --recipe-path recipe.json

FROM chef AS builder
COPY --from=planner /app/recipe.json recipe.json
RUN cargo chef cook --release --locked --no-default-features --recipe-path recipe.json
# The context has no .git: build.rs takes the commit for `build_info` from here.
ARG REVISION=unknown
ENV AUDIENCE_GATEWAY_COMMIT=${REVISION}
COPY . .
RUN cargo build --release --locked --no-default-features --bin audience-gateway

FROM ${RUNTIME_IMAGE} AS runtime
ARG VERSION=dev
ARG REVISION=unknown
ARG SOURCE_URL=https://github.com/example/audience-gateway
LABEL org.opencontainers.image.title="audience-gateway" \
      org.opencontainers.image.description="JWT-authenticated REST gateway over the Digital Audience API" \
      org.opencontainers.image.source="${SOURCE_URL}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}"

COPY --from=builder /app/target/release/audience-gateway /usr/local/bin/audience-gateway

# distroless' nonroot user, numeric so the kubelet can enforce runAsNonRoot without
# resolving names; the Helm chart sets the same uid explicitly.
USER 65532:65532
EXPOSE 8080

# Docker/Podman only (Kubernetes ignores HEALTHCHECK and uses the chart's probes).
# distroless has no curl/wget, so the binary probes itself.
HEALTHCHECK --interval=30s --timeout=3s --start-period=10s --retries=3 \
  CMD ["/usr/local/bin/audience-gateway", "healthcheck", "--url", "http://127.0.0.1:8080/healthz"]

ENTRYPOINT ["/usr/local/bin/audience-gateway"]
CMD ["serve"]
