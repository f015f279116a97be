# Multi-stage build: compile with the Rust toolchain, run on a small Debian
# image as a non-root user. Used by docker-compose.yml.
FROM rust:1-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY sql ./sql
COPY views ./views
RUN cargo build --release --locked --bin buildmaster

FROM debian:bookworm-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates curl \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --home-dir /var/lib/buildmaster --create-home buildmaster
COPY --from=build /src/target/release/buildmaster /usr/local/bin/buildmaster
USER buildmaster
WORKDIR /var/lib/buildmaster
EXPOSE 8010
HEALTHCHECK --interval=10s --timeout=3s CMD curl -fsS http://127.0.0.1:8010/healthz || exit 1
ENTRYPOINT ["buildmaster"]
CMD ["up", "--listen", "0.0.0.0:8010"]
