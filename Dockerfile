# BoxOffice container image.
#
#   docker build -t boxoffice .                                   # build from source (default target)
#   docker build --target runtime-prebuilt -t boxoffice .         # package target/release/boxoffice
#
# Stages, in file order. The classic builder (used where buildx is missing) builds every stage up
# to the requested target, so `runtime-prebuilt` comes before the Rust stages: building it never
# needs the Rust image.
#   runtime-base      the runtime filesystem: data dir owned by 65532, CA certificates
#   runtime-prebuilt  runtime-base + a binary built outside Docker (CI, release pipelines)
#   dependencies      the Rust image with every dependency compiled (cached until Cargo.* change)
#   build             the real source compiled on top of `dependencies`
#   runtime           runtime-base + the binary from `build` (the default target)
#
# Base images are build arguments so a build without a registry can pass locally made ones; pin
# them by digest for releases (docs/deploy.md).
ARG RUST_IMAGE=rust:1.95-bookworm
ARG RUNTIME_IMAGE=debian:bookworm-slim

FROM ${RUNTIME_IMAGE} AS runtime-base
# The binary speaks TLS (Stripe) through rustls with the system's roots: make sure they are
# there. Images that already have them (the CI base) need no package index, hence the test.
# Not pinned: CA bundles must follow Debian's security updates, and old versions leave the mirror.
# hadolint ignore=DL3008
RUN if [ ! -s /etc/ssl/certs/ca-certificates.crt ]; then \
        apt-get update \
        && apt-get install -y --no-install-recommends ca-certificates \
        && rm -rf /var/lib/apt/lists/*; \
    fi \
    && mkdir -p /var/lib/boxoffice \
    && chown 65532:65532 /var/lib/boxoffice \
    && chmod 0700 /var/lib/boxoffice
ARG VERSION=0.1.0
ARG REVISION=unknown
LABEL org.opencontainers.image.title="boxoffice" \
      org.opencontainers.image.description="Ticketing platform where every ticket and order is a supervised actor" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.licenses="MIT" \
      org.opencontainers.image.vendor="BoxOffice" \
      org.opencontainers.image.documentation="docs/deploy.md"
# Listen on every interface inside the container; the embedded store lives on the volume.
ENV BOXOFFICE_LISTEN=0.0.0.0:8080 \
    BOXOFFICE_DATA_DIR=/var/lib/boxoffice
WORKDIR /var/lib/boxoffice
VOLUME ["/var/lib/boxoffice"]
EXPOSE 8080
USER 65532:65532
# Exec form, no shell: the binary asks its own /healthz (Kubernetes ignores this and uses probes).
HEALTHCHECK --interval=30s --timeout=5s --start-period=15s --retries=3 \
    CMD ["/usr/local/bin/boxoffice", "healthcheck"]
# PID 1 is the binary itself, so SIGTERM from `docker stop` starts its graceful shutdown.
ENTRYPOINT ["/usr/local/bin/boxoffice"]
CMD ["serve"]

FROM runtime-base AS runtime-prebuilt
# Path of the binary inside the build context (CI: cargo build --release on the host, same
# Debian release as the runtime so glibc matches).
ARG BINARY=target/release/boxoffice
COPY --chown=0:0 ${BINARY} /usr/local/bin/boxoffice

FROM ${RUST_IMAGE} AS dependencies
WORKDIR /src
# Only the manifests: this layer and the next are rebuilt when dependencies change, not when
# the source does. Dummy targets stand in for src/ so cargo compiles every dependency now.
COPY Cargo.toml Cargo.lock ./
RUN mkdir -p src \
    && echo 'fn main() {}' > src/main.rs \
    && touch src/lib.rs \
    && cargo build --release --locked --bin boxoffice \
    && rm -rf src target/release/boxoffice target/release/deps/boxoffice-* \
        target/release/deps/libboxoffice-* target/release/.fingerprint/boxoffice-*

FROM dependencies AS build
COPY src ./src
# The fingerprints of the dummy targets were removed above, so cargo rebuilds our crate
# whatever the copied files' timestamps are.
RUN cargo build --release --locked --bin boxoffice \
    && install -m 0755 target/release/boxoffice /usr/local/bin/boxoffice

FROM runtime-base AS runtime
COPY --from=build --chown=0:0 /usr/local/bin/boxoffice /usr/local/bin/boxoffice
