# registrar's image for those who build with a registry (docker build, kaniko,
# buildkit): the same layout as `make image` (scripts/image.sh), which builds
# it here with buildah and no registry. Untested here: this machine reaches no
# container registry, so the `rust` base image below cannot be pulled.
#   docker build -t registrar .
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
# The allocator's build-time settings (one jemalloc arena; docs/benchmarks.md).
COPY .cargo ./.cargo
COPY src ./src
COPY scripts/image-rootfs.sh ./scripts/
RUN cargo build --locked --release --bin registrar \
 && bash scripts/image-rootfs.sh target/release/registrar /rootfs

# Nothing but the binary, the libraries it links, a CA bundle and uid 65532.
FROM scratch
COPY --from=build /rootfs/ /
USER 65532:65532
ENV SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/registrar"]
