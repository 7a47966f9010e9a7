#!/usr/bin/env bash
# Build krew v0.4.3 (the kubectl plugin manager, from the Go module proxy,
# through the wrapper module in tools/krew) once, cache it outside the
# repository, and print its path. The e2e test tests/e2e/krew.rs installs the
# plugin with it from the manifest scripts/krew-package.sh writes.
set -euo pipefail
here=$(cd "$(dirname "$0")/../tools/krew" && pwd)
hash=$( (go version; cat "$here/go.mod" "$here/go.sum") | sha256sum | cut -c1-16)
cache=${REGISTRAR_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/registrar}/tools/krew-v0.4.3-$hash
out="$cache/krew"
if [ -x "$out" ]; then
  echo "$out"
  exit 0
fi
mkdir -p "$cache"
exec 9>"$cache/.lock"
flock 9
if [ ! -x "$out" ]; then
  echo "building krew v0.4.3 (under a minute the first time)..." >&2
  start=$(date +%s)
  # gitTag stamps the version `krew version` reports, as krew's release does.
  (cd "$here" && GOTOOLCHAIN=local GOFLAGS=-mod=mod CGO_ENABLED=0 \
    go build -trimpath -ldflags '-s -w -X sigs.k8s.io/krew/internal/version.gitTag=v0.4.3' \
    -o "$out.tmp" sigs.k8s.io/krew/cmd/krew)
  mv "$out.tmp" "$out"
  echo "built krew in $(( $(date +%s) - start ))s" >&2
fi
echo "$out"
