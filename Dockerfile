# ari-transfer service image (docker-compose.yml builds it).
FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin ari-transfer

FROM debian:bookworm-slim
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/*
COPY --from=build /src/target/release/ari-transfer /usr/local/bin/ari-transfer
USER nobody
EXPOSE 8080
CMD ["ari-transfer", "run", "--config", "/etc/ari-transfer/ari-transfer.toml"]
