#!/usr/bin/env bash
# scripts/krew-package.sh VERSION BASE_URL OUTDIR
#
# Packs the kubectl plugin for krew: OUTDIR/kubectl-registrar_VERSION_linux_amd64.tar.gz
# (the binary kubectl-registrar and README.md; the repository has no LICENSE
# file) and OUTDIR/registrar.yaml, the manifest deploy/krew/registrar.yaml.tmpl
# with ${VERSION}, ${URI} (BASE_URL/<archive>) and ${SHA256} (the archive's)
# filled in. Install the result without publishing it:
#
#   kubectl krew install --manifest=OUTDIR/registrar.yaml \
#     --archive=OUTDIR/kubectl-registrar_VERSION_linux_amd64.tar.gz
#
# The binary is a release build (`cargo build --locked --release --bin
# kubectl-registrar`), or the one KUBECTL_REGISTRAR_BIN names (the e2e test
# passes its debug build). It must be a linux/amd64 executable whose
# `--version` is VERSION.
set -euo pipefail
if [ "$#" -ne 3 ]; then
  echo "usage: $0 VERSION BASE_URL OUTDIR" >&2
  exit 2
fi
version=$1 base_url=${2%/} outdir=$3
if ! [[ $version =~ ^[0-9]+\.[0-9]+\.[0-9]+(-[0-9A-Za-z.-]+)?(\+[0-9A-Za-z.-]+)?$ ]]; then
  echo "VERSION must be a semantic version without a leading v (e.g. 0.1.0), not '$version'" >&2
  exit 2
fi
if ! [[ $base_url =~ ^https?://[^[:space:]]+$ ]]; then
  echo "BASE_URL must be an http(s) URL, not '$base_url'" >&2
  exit 2
fi
repo=$(cd "$(dirname "$0")/.." && pwd)
template="$repo/deploy/krew/registrar.yaml.tmpl"

if [ -n "${KUBECTL_REGISTRAR_BIN:-}" ]; then
  bin=$KUBECTL_REGISTRAR_BIN
else
  (cd "$repo" && cargo build --locked --release --bin kubectl-registrar >&2)
  bin="${CARGO_TARGET_DIR:-$repo/target}/release/kubectl-registrar"
fi
if [ ! -x "$bin" ]; then
  echo "no executable kubectl-registrar at $bin" >&2
  exit 1
fi
# An ELF executable (7f 45 4c 46) for x86-64 (e_machine 0x3e at offset 18).
magic=$(od -An -tx1 -N4 "$bin" | tr -d ' \n')
machine=$(od -An -tx1 -j18 -N2 "$bin" | tr -d ' \n')
if [ "$magic" != 7f454c46 ] || [ "$machine" != 3e00 ]; then
  echo "$bin is not a linux/amd64 executable" >&2
  exit 1
fi
reported=$("$bin" --version) || { echo "$bin --version failed" >&2; exit 1; }
if [ "$reported" != "kubectl-registrar $version" ]; then
  echo "$bin reports '$reported', not version $version" >&2
  exit 1
fi

archive_name="kubectl-registrar_${version}_linux_amd64.tar.gz"
mkdir -p "$outdir"
stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
install -m 0755 "$bin" "$stage/kubectl-registrar"
install -m 0644 "$repo/README.md" "$stage/README.md"
# Reproducible: sorted entries, no owners, fixed times, no gzip timestamp.
tar --sort=name --owner=0 --group=0 --numeric-owner --mtime="@${SOURCE_DATE_EPOCH:-0}" \
  -C "$stage" -cf - kubectl-registrar README.md | gzip -n >"$stage/$archive_name"
mv "$stage/$archive_name" "$outdir/$archive_name"
sha256=$(sha256sum "$outdir/$archive_name" | cut -d' ' -f1)

# Fill in the template with bash alone (quoted replacements are literal).
manifest=$(<"$template")
manifest=${manifest//"\${VERSION}"/"$version"}
manifest=${manifest//"\${URI}"/"$base_url/$archive_name"}
manifest=${manifest//"\${SHA256}"/"$sha256"}
if [[ $manifest == *"\${"* ]]; then
  echo "$template has a placeholder this script does not fill" >&2
  exit 1
fi
printf '%s\n' "$manifest" >"$outdir/registrar.yaml"

echo "$outdir/$archive_name" >&2
echo "$outdir/registrar.yaml" >&2
