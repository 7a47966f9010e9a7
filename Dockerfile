# registrar operator image: static-enough Rust binary on a distroless, non-root base.
#   docker build -t registrar .
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
# The allocator's build-time settings (one jemalloc arena; docs/benchmarks.md).
COPY .cargo ./.cargo
COPY src ./src
RUN cargo build --locked --release --bin registrar

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /src/target/release/registrar /usr/local/bin/registrar
USER 65532:65532
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/registrar"]
