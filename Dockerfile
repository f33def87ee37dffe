# syntax=docker/dockerfile:1
#
# Vigil image: the `vigil` binary plus the shipped rules in /etc/vigil/rules.
#   docker build -t vigil .
#   docker compose up        (see docker-compose.yml)

ARG RUST_VERSION=1.85

FROM rust:${RUST_VERSION}-bookworm AS build
# rdkafka builds librdkafka from source (cmake-build) and links OpenSSL.
RUN apt-get update \
 && apt-get install -y --no-install-recommends cmake pkg-config libssl-dev zlib1g-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
# Only what cargo needs, so the build context's target/ and .cache/ stay out.
COPY Cargo.toml Cargo.lock ./
COPY engine engine
COPY replay replay
COPY cli cli
COPY benches benches
# Cache mounts keep the registry and incremental artifacts between builds;
# the binary is copied out because the target mount is not part of the layer.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release -p vigil \
 && cp target/release/vigil /usr/local/bin/vigil

FROM debian:bookworm-slim
# libssl3 for the OpenSSL that rdkafka links; CA roots for TLS brokers.
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates libssl3 \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --home-dir /var/lib/vigil --create-home --shell /usr/sbin/nologin vigil
COPY --from=build /usr/local/bin/vigil /usr/local/bin/vigil
COPY rules /etc/vigil/rules
USER vigil
# Working dir for any local state; docker-compose.yml puts a volume here.
WORKDIR /var/lib/vigil
ENV RUST_LOG=info
CMD ["vigil", "run", "--brokers", "kafka:9092", "--rules", "/etc/vigil/rules"]
