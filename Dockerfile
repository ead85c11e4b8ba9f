# The `topics` server with its bundled model, on a slim Debian runtime, as a non-root user.
#
#   docker build -t topics:0.1.0 .
#   docker run --rm -p 50051:50051 -p 9090:9090 topics:0.1.0
#
# The defaults below (address, metrics, model) are environment variables, so that flags
# given after `serve` add to them: `docker run topics:0.1.0 serve --drain-delay 5s`.
# The cache mounts need BuildKit (the default builder of current Docker releases).

ARG RUST_VERSION=1.95
ARG DEBIAN_RELEASE=trixie

FROM rust:${RUST_VERSION}-slim-${DEBIAN_RELEASE} AS build
WORKDIR /src
# Only what `cargo build` reads, so that editing docs, tests or manifests reuses this layer.
# benches/ is listed in Cargo.toml, so cargo wants it present even though it is not built.
COPY Cargo.toml Cargo.lock build.rs ./
COPY proto proto
COPY benches benches
COPY src src
# The target directory is a cache, gone after this step: the binary is copied out of it here.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin topics \
    && install -D -m 0755 target/release/topics /out/topics

FROM debian:${DEBIAN_RELEASE}-slim
# A numeric user, so that Kubernetes' runAsNonRoot can check it without reading /etc/passwd.
RUN groupadd --system --gid 10001 topics \
    && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
        --shell /usr/sbin/nologin topics
# The binary needs only glibc and libgcc (TLS is rustls), both in the slim image.
COPY --from=build /out/topics /usr/local/bin/topics
COPY models/topics.model /app/models/topics.model
WORKDIR /app
ENV TOPICS_ADDR=0.0.0.0:50051 \
    TOPICS_METRICS_ADDR=0.0.0.0:9090 \
    TOPICS_MODEL=/app/models/topics.model
USER 10001:10001
EXPOSE 50051 9090
# The server handles SIGTERM (drain, then stop) and SIGHUP (reload the model) itself,
# so it runs as PID 1 without an init.
ENTRYPOINT ["topics"]
CMD ["serve"]
