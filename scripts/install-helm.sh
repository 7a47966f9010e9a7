#!/usr/bin/env bash
# Build helm at a pinned version (from the Go module proxy) once, cache it
# outside the repository, and print its path.
set -euo pipefail
version=v3.22.0
cache=${REGISTRAR_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/registrar}/tools/helm-$version
out="$cache/bin/helm"
if [ -x "$out" ]; then
  echo "$out"
  exit 0
fi
mkdir -p "$cache"
exec 9>"$cache/.lock"
flock 9
if [ ! -x "$out" ]; then
  echo "building helm $version (a few minutes the first time)..." >&2
  start=$(date +%s)
  GOTOOLCHAIN=local GOFLAGS=-mod=mod GOBIN="$cache/bin.tmp" go install "helm.sh/helm/v3/cmd/helm@$version" >&2
  mv "$cache/bin.tmp" "$cache/bin"
  echo "built helm in $(( $(date +%s) - start ))s" >&2
fi
echo "$out"
