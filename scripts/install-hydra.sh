#!/usr/bin/env bash
# Build Ory Hydra v2.3.0 (from the Go module proxy, through the wrapper module
# in tools/hydra) once, cache it outside the repository, and print its path.
# Hydra needs cgo for its in-memory SQLite database (DSN=memory).
set -euo pipefail
here=$(cd "$(dirname "$0")/../tools/hydra" && pwd)
hash=$( (go version; cat "$here/go.mod" "$here/go.sum") | sha256sum | cut -c1-16)
cache=${REGISTRAR_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/registrar}/tools/hydra-v2.3.0-$hash
out="$cache/hydra"
if [ -x "$out" ]; then
  echo "$out"
  exit 0
fi
mkdir -p "$cache"
exec 9>"$cache/.lock"
flock 9
if [ ! -x "$out" ]; then
  echo "building Ory Hydra v2.3.0 (about a minute the first time)..." >&2
  start=$(date +%s)
  (cd "$here" && GOTOOLCHAIN=local GOFLAGS=-mod=mod CGO_ENABLED=1 \
    go build -trimpath -tags sqlite,sqlite_omit_load_extension -o "$out.tmp" github.com/ory/hydra/v2)
  mv "$out.tmp" "$out"
  echo "built hydra in $(( $(date +%s) - start ))s" >&2
fi
echo "$out"
