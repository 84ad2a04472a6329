# syntax=docker/dockerfile:1
# herald: a real-time WebSocket push hub.
#
#   docker build -t herald .
#   docker run -p 8080:8080 -e HERALD_AUTH__SECRET=... -e HERALD_SERVER__API_KEY=... herald
#
# The image listens on 0.0.0.0:8080, where herald refuses to start with its
# development secrets: pass real ones (the Helm chart does, from a Secret).

ARG RUST_VERSION=1

FROM rust:${RUST_VERSION}-bookworm AS builder
WORKDIR /src
COPY . .
# Cache mounts keep the registry and the target directory between builds, so a
# source change recompiles herald, not its dependencies. The binary is copied
# out because the cached target directory is not part of the layer.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/usr/local/cargo/git \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin herald \
    && cp target/release/herald /usr/local/bin/herald

# distroless/cc has glibc and libgcc, all herald links to (TLS is rustls), and
# nothing else: no shell, no package manager. Its "nonroot" user is UID 65532,
# the UID the Helm chart runs as.
FROM gcr.io/distroless/cc-debian12:nonroot
LABEL org.opencontainers.image.title="herald" \
      org.opencontainers.image.description="A real-time WebSocket push hub" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=builder /usr/local/bin/herald /usr/local/bin/herald
# Environment beats the config file: to listen elsewhere, pass
# -e HERALD_SERVER__LISTEN=... or --listen, not server.listen in a file.
ENV HERALD_SERVER__LISTEN=0.0.0.0:8080
EXPOSE 8080
USER nonroot:nonroot
# No HEALTHCHECK: there is no shell or curl to run one; orchestrators probe
# /health and /ready over HTTP.
ENTRYPOINT ["/usr/local/bin/herald"]
