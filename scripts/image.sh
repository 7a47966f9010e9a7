#!/usr/bin/env bash
# Builds registrar's container image here, with no registry: Debian's buildah
# (unpacked by scripts/install-node-tools.sh), FROM scratch, the root filesystem
# of scripts/image-rootfs.sh (the stripped release binary, the libraries it
# links, a CA bundle, uid 65532). Writes a docker-archive and prints its path:
#   target/image/registrar-<version>-<commit>.tar
# tagged ghcr.io/registrar-dev/registrar:<version>-<commit> (the chart's
# repository), with OCI annotations and labels for source, revision and version.
# Load it with `ctr -n k8s.io images import`, `kind load image-archive`, or push
# it with `buildah push` / `skopeo copy` (README.md, "Container image").
#
#   scripts/image.sh                  builds the release binary first
#   REGISTRAR_BINARY=path scripts/image.sh    uses that binary
#   IMAGE_TAG=tag scripts/image.sh            tags it so instead
set -euo pipefail
cd "$(dirname "$0")/.."
repository=${IMAGE_REPOSITORY:-ghcr.io/registrar-dev/registrar}
version=$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -1)
commit=$(git rev-parse --short=12 HEAD 2>/dev/null || echo unknown)
if [ -n "$(git status --porcelain --untracked-files=no 2>/dev/null)" ]; then
  commit="$commit-dirty"
fi
tag=${IMAGE_TAG:-$version-$commit}
binary=${REGISTRAR_BINARY:-}
if [ -z "$binary" ]; then
  cargo build --locked --release --bin registrar >&2
  binary=target/release/registrar
fi

out=target/image
mkdir -p "$out"
work=$(mktemp -d "$PWD/$out/build.XXXXXX")
trap 'rm -rf "$work"' EXIT
bash scripts/image-rootfs.sh "$binary" "$work/rootfs"
source scripts/buildah-env.sh "$work/buildah"

source_url=https://github.com/registrar-dev/registrar
container=$(buildah from scratch)
buildah copy "$container" "$work/rootfs/" / >/dev/null
metadata=()
for key in source:$source_url revision:$commit version:$version title:registrar \
  "description:OAuth 2.0 client registrations as Kubernetes resources" licenses:Apache-2.0; do
  metadata+=(--annotation "org.opencontainers.image.${key%%:*}=${key#*:}" --label "org.opencontainers.image.${key%%:*}=${key#*:}")
done
buildah config --user 65532:65532 --workingdir / --entrypoint '["/usr/local/bin/registrar"]' --cmd '' \
  --port 8080 --env SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt "${metadata[@]}" "$container"
buildah commit --quiet --rm "$container" "$repository:$tag" >/dev/null
archive="$out/registrar-$tag.tar"
rm -f "$archive"
buildah push --quiet "$repository:$tag" "docker-archive:$PWD/$archive:$repository:$tag" >&2
size=$(du -sb "$work/rootfs" | cut -f1)
echo "image $repository:$tag: $(( size / 1024 / 1024 )) MiB unpacked ($size bytes), archive $(du -h "$archive" | cut -f1)" >&2
echo "$archive"
