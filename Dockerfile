# syntax=docker/dockerfile:1
# rekey container image: a release build in the Rust image, run from
# debian:bookworm-slim as a non-root user.
#   docker build -t rekey:0.1.0 .
#   docker run -v $PWD/rekey.toml:/etc/rekey/rekey.toml:ro rekey:0.1.0
# The runtime image ships CA roots (ca-certificates): rustls' platform
# verifier finds none in scratch or distroless images, so there you must
# set `trust_bundle` on every issuer that talks TLS.

FROM rust:1-bookworm AS builder
WORKDIR /src
# Manifests first, so the dependency layer is cached across source edits.
COPY Cargo.toml Cargo.lock ./
COPY src ./src
# Cargo.toml names the bench target; cargo wants its file to exist.
COPY benches ./benches
RUN cargo build --release --locked --bin rekey

FROM debian:bookworm-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/*
# A fixed uid/gid so Kubernetes' runAsUser and file ownership can match it.
RUN groupadd --system --gid 10001 rekey \
    && useradd --system --uid 10001 --gid rekey --home-dir /var/lib/rekey \
       --shell /usr/sbin/nologin rekey \
    && install -d -o rekey -g rekey -m 0700 /var/lib/rekey
COPY --from=builder /src/target/release/rekey /usr/local/bin/rekey
USER 10001:10001
# Health, readiness, status and metrics (daemon.listen).
EXPOSE 9464
ENTRYPOINT ["rekey", "run"]
# The config comes from a mounted file (a ConfigMap in Kubernetes).
CMD ["-c", "/etc/rekey/rekey.toml"]
