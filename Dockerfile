# One image for the five binaries of the sample; docker-compose.yml picks one per service with
# `command:`. Build: docker build -t tcc-sample .   Run one: docker run tcc-sample coordinator
#
# Stage 1: build the whole workspace (release, exactly the committed Cargo.lock).
FROM rust:1-bookworm AS builder
RUN apt-get update \
    && apt-get install -y --no-install-recommends libpq-dev \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN cargo build --release --locked \
        --bin coordinator --bin trans-out --bin trans-in --bin stock --bin app \
    && mkdir -p /out \
    && cp target/release/coordinator target/release/trans-out target/release/trans-in \
          target/release/stock target/release/app /out/

# Stage 2: a small runtime with libpq (Diesel's Postgres driver), CA certificates, and curl for
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
