#!/usr/bin/env bash
# Build the test control plane binary once per set of inputs and print its path.
#
# The binary is cached outside the repository, under
#   ${REGISTRAR_CACHE:-${XDG_CACHE_HOME:-~/.cache}/registrar}/controlplane/<hash>/
# where <hash> covers go.mod, go.sum, the Go sources and the Go version, so a
# rebuild happens only when one of them changes. A `kubectl` symlink sits next to
# it (the binary dispatches on its name). Progress goes to stderr, the path to stdout.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
cd "$here"
export GOTOOLCHAIN=local GOFLAGS=-mod=mod

hash=$( (go version; cat go.mod go.sum ./*.go) | sha256sum | cut -c1-16)
cache=${REGISTRAR_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/registrar}/controlplane
out="$cache/$hash/controlplane"
if [ -x "$out" ]; then
  echo "$out"
  exit 0
fi

mkdir -p "$cache"
exec 9>"$cache/.lock"
flock 9
if [ ! -x "$out" ]; then
  version=$(sed -n 's#^\(require\)\{0,1\}[[:space:]]*k8s\.io/kubernetes \(v[0-9.]*\).*#\2#p' go.mod)
  [ -n "$version" ] || { echo "cannot read the Kubernetes version from go.mod" >&2; exit 1; }
  major=${version#v}; major=${major%%.*}
  minor=${version#v*.}; minor=${minor%%.*}
  pkg=k8s.io/component-base/version
  ldflags="-s -w -X $pkg.gitVersion=$version -X $pkg.gitMajor=$major -X $pkg.gitMinor=$minor"
  ldflags+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=1970-01-01T00:00:00Z"
  echo "building the test control plane (Kubernetes $version); the first build takes 10-20 minutes..." >&2
  start=$(date +%s)
  mkdir -p "$cache/$hash"
  go build -trimpath -ldflags "$ldflags" -o "$out.tmp" .
  ln -sf controlplane "$cache/$hash/kubectl"
  mv "$out.tmp" "$out"
  echo "built $out in $(( $(date +%s) - start ))s" >&2
fi
echo "$out"
