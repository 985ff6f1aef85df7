# syntax=docker/dockerfile:1
#
# authgate and the bundled task backend in one small image.
#
#   docker build -t authgate:local .
#   docker run --rm -p 8080:8080 -e BETTER_AUTH_SECRET=... authgate:local
#
# The image runs `authgate --config /etc/authgate/gateway.toml` (a copy of
# deploy/gateway.compose.toml; mount your own file over it). The same image runs the demo backend
# with `--entrypoint /usr/local/bin/task-backend`. See deploy/README.md and docker-compose.yml.

ARG RUST_IMAGE=rust:1-slim-bookworm
ARG RUNTIME_IMAGE=debian:bookworm-slim

# ---------------------------------------------------------------------------------------------
# Builder
# ---------------------------------------------------------------------------------------------
FROM ${RUST_IMAGE} AS builder
WORKDIR /build

# Smaller binaries; the release profile in Cargo.toml (fat LTO, one codegen unit) applies as is.
ENV CARGO_PROFILE_RELEASE_STRIP=symbols \
    CARGO_TERM_COLOR=never

# Dependency layer: only the manifest and the lock file, with stub sources at every target path
# Cargo.toml names or discovers (the lib, both [[bin]]s, the example, the [[bench]]), so this
# layer is rebuilt only when the dependencies change: cargo refuses to read a manifest whose
# [[bench]] file is missing, even to build only the binaries. Afterwards the stub builds of this
# crate itself are forgotten (fingerprints and artifacts), so the real sources below are always
# recompiled: COPY keeps the files' mtimes, which can be older than the stub build and would look
# up to date. The bench stub stays (the image never builds benches; the manifest needs the file).
COPY Cargo.toml Cargo.lock ./
RUN mkdir -p src/bin examples benches \
 && echo 'fn main() {}' > src/main.rs \
 && echo 'fn main() {}' > src/bin/task-backend.rs \
 && echo 'fn main() {}' > examples/ratelimit_memory.rs \
 && echo 'fn main() {}' > benches/hot_path.rs \
 && touch src/lib.rs \
 && cargo build --release --locked --bin authgate --bin task-backend \
 && rm -rf src examples \
           target/release/.fingerprint/authgate-* \
           target/release/deps/authgate-* target/release/deps/libauthgate-* \
           target/release/deps/task_backend-* \
           target/release/authgate target/release/task-backend

# The real sources. gateway.toml is compiled into `authgate demo` (include_str!).
COPY src ./src
COPY examples ./examples
COPY gateway.toml ./
RUN cargo build --release --locked --bin authgate --bin task-backend \
 && ./target/release/authgate --version

# ---------------------------------------------------------------------------------------------
# Runtime
# ---------------------------------------------------------------------------------------------
# debian:bookworm-slim rather than distroless: it has bash, which the HEALTHCHECK below uses
# (bash's /dev/tcp), so the image needs no HTTP client. Nothing else is installed: the gateway
# speaks plain http:// to the upstream and to JWKS URLs, so it needs no CA certificates.
FROM ${RUNTIME_IMAGE} AS runtime

RUN groupadd --system --gid 10001 authgate \
 && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
            --shell /usr/sbin/nologin authgate

COPY --from=builder /build/target/release/authgate /build/target/release/task-backend /usr/local/bin/
# The default config, owned by root and read-only for the gateway; a volume mount can replace it.
COPY --chmod=0644 deploy/gateway.compose.toml /etc/authgate/gateway.toml

USER 10001:10001
EXPOSE 8080

# Liveness: GET /healthz on the admin listener (`[admin] listen = "127.0.0.1:9090"` in the config).
# Exec form with bash's /dev/tcp: no curl or wget in the image. Healthy only on a 200 status line.
HEALTHCHECK --interval=10s --timeout=3s --start-period=5s --retries=3 \
  CMD ["bash", "-c", "exec 3<>/dev/tcp/127.0.0.1/9090 && printf 'GET /healthz HTTP/1.1\\r\\nHost: localhost\\r\\nConnection: close\\r\\n\\r\\n' >&3 && head -n 1 <&3 | grep -q ' 200 '"]

ENTRYPOINT ["/usr/local/bin/authgate"]
CMD ["--config", "/etc/authgate/gateway.toml"]
