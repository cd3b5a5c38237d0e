# vapgen's controller image.
#   docker build -t vapgen:0.1.0 .
# Build: the workspace's release build (host/build.rs compiles the bundled decision module for
# wasm32-unknown-unknown and embeds it). Runtime: distroless, non-root (65532), no shell; the
# binary needs only glibc (rustls with ring, no OpenSSL).
FROM docker.io/library/rust:1.95-bookworm AS build
WORKDIR /src
RUN rustup target add wasm32-unknown-unknown
COPY . .
RUN cargo build --release --locked -p vapgen --bin vapgen \
 && install -D -m 0755 target/release/vapgen /out/vapgen

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /out/vapgen /usr/local/bin/vapgen
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/vapgen"]
CMD ["run"]
