# One image for the five binaries of the sample; docker-compose.yml picks one per service with
# `command:`. Build: docker build -t tcc-sample .   Run one: docker run tcc-sample coordinator
#
# The build is layered so that a change rebuilds only what it touches (cargo-chef): the
# dependencies are compiled in a layer keyed by a recipe of the workspace's manifests and
# Cargo.lock, so editing a service's source recompiles only the workspace's own crates, and a
# file the build does not read (README.md, docs/, scripts/, tests) is not in the context at all
# (.dockerignore). Every stage works with the legacy builder that docker-compose 1.29 drives.

# Stage 0: the toolchain, libpq's headers (Diesel's Postgres driver) and cargo-chef, pinned.
FROM rust:1-bookworm AS chef
RUN apt-get update \
    && apt-get install -y --no-install-recommends libpq-dev \
    && rm -rf /var/lib/apt/lists/*
RUN cargo install cargo-chef --locked --version 0.1.78
WORKDIR /src
# The release profile keeps line tables (Cargo.toml), which make each binary 80-100 MB. The image
# ships them stripped of debug info but not of symbols, so a panic's backtrace (RUST_BACKTRACE=1)
# still names every function; only file:line is lost. For file:line too, build with
#   docker-compose build --build-arg STRIP=none
# (about 500 MB). Set here, for the dependencies and the binaries alike, so both builds below
# share one profile and the dependency layer is reused.
ARG STRIP=debuginfo
ENV CARGO_PROFILE_RELEASE_STRIP=$STRIP

# Stage 1: the recipe, a digest of the manifests and Cargo.lock. Any source change re-runs this
# stage, but the recipe it writes changes only with the dependencies.
FROM chef AS planner
COPY . .
RUN cargo chef prepare --recipe-path recipe.json

# Stage 2: the dependencies (cached while the recipe is unchanged), then the workspace's crates.
FROM chef AS builder
COPY --from=planner /src/recipe.json recipe.json
# The same selection of binaries in both builds: the dependency layer then holds exactly the
# features the binaries need, and the second build compiles only the workspace's own crates.
ARG BINS="--bin coordinator --bin trans-out --bin trans-in --bin stock --bin app"
RUN cargo chef cook --release --locked --recipe-path recipe.json $BINS
COPY . .
RUN cargo build --release --locked $BINS \
    && mkdir -p /out \
    && cp target/release/coordinator target/release/trans-out target/release/trans-in \
          target/release/stock target/release/app /out/

# Stage 3: a small runtime with libpq (Diesel's Postgres driver), CA certificates, and curl for
# the health checks; the services run as an unprivileged user. Migrations are embedded in the
# binaries, so nothing else is copied.
FROM debian:bookworm-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends libpq5 ca-certificates curl \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin tcc
COPY --from=builder /out/ /usr/local/bin/
USER tcc
# Inside a container the services must listen on every interface (their default is 127.0.0.1).
ENV HOST=0.0.0.0 RUST_LOG=info
EXPOSE 8080 8081 8082 8083 36789
CMD ["app"]
