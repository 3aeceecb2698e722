# Multi-stage build of nats-insights: a Rust builder, then a small non-root runtime.
#   docker build -t nats-insights:0.1.0 .
#   docker run --rm -e NATS_PASSWORD=… -p 9464:9464 nats-insights:0.1.0 \
#       run --server nats://host:4222 --user sys --metrics-listen 0.0.0.0:9464
FROM rust:1-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
# The binary compiles in the runbooks. Cargo loads every target the manifests declare, so the
# root package's benchmark (benches/) and the workspace's other members (crates/testbed,
# crates/tools: the test harness, the demo, the soak) must be there too, though only the
# product package is built.
COPY src ./src
COPY runbooks ./runbooks
COPY benches ./benches
COPY crates ./crates
# deploy/ holds the reference configurations; the testbed crate reads the test clusters'
# accounts from it (not built here).
COPY deploy ./deploy
RUN cargo build --release --locked -p nats-insights --bin nats-insights

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /src/target/release/nats-insights /usr/local/bin/nats-insights
# distroless :nonroot runs as uid 65532; the binary needs no files of its own and no root.
USER 65532:65532
EXPOSE 9464
ENTRYPOINT ["nats-insights"]
CMD ["run"]
