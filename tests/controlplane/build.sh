#!/usr/bin/env bash
# Build the test control plane binary once per set of inputs and print its path.
#
#   tests/controlplane/build.sh [MINOR]
#
# MINOR (e.g. 1.35) picks one of the Kubernetes releases registrar supports:
# go.mod pins the newest, which the whole suite runs on; go.<MINOR>.mod (and
# its go.<MINOR>.sum) each of the others (update-kubernetes.sh writes them).
# Without MINOR, or with REGISTRAR_KUBERNETES set to it, the same choice.
#
# The binary is cached outside the repository, under
#   ${REGISTRAR_CACHE:-${XDG_CACHE_HOME:-~/.cache}/registrar}/controlplane/<hash>/
# where <hash> covers the module files, the Go sources and the Go version, so
# a rebuild happens only when one of them changes. A `kubectl` symlink sits
# next to it (the binary dispatches on its name). Progress goes to stderr, the
# path to stdout.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
cd "$here"
export GOTOOLCHAIN=local GOFLAGS=-mod=mod

# The minor a module file pins: "1.36" for k8s.io/kubernetes v1.36.3.
pinned() {
  sed -n 's#^\(require\)\{0,1\}[[:space:]]*k8s\.io/kubernetes v\([0-9]*\.[0-9]*\)\..*#\2#p' "$1"
}

minor=${1:-${REGISTRAR_KUBERNETES:-}}
modfile=go.mod
if [ -n "$minor" ] && [ "$minor" != "$(pinned go.mod)" ]; then
  modfile=go.$minor.mod
  if [ ! -f "$modfile" ]; then
    echo "no control plane for Kubernetes $minor: tests/controlplane has go.mod ($(pinned go.mod))$(
      for f in go.*.mod; do [ -f "$f" ] && printf ', %s' "$f"; done)" >&2
    exit 1
  fi
fi
sumfile=${modfile%.mod}.sum

hash=$( (go version; cat "$modfile" "$sumfile" ./*.go) | sha256sum | cut -c1-16)
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
  version=$(sed -n 's#^\(require\)\{0,1\}[[:space:]]*k8s\.io/kubernetes \(v[0-9.]*\).*#\2#p' "$modfile")
  [ -n "$version" ] || { echo "cannot read the Kubernetes version from $modfile" >&2; exit 1; }
  major=${version#v}; major=${major%%.*}
  minor=${version#v*.}; minor=${minor%%.*}
  pkg=k8s.io/component-base/version
  ldflags="-s -w -X $pkg.gitVersion=$version -X $pkg.gitMajor=$major -X $pkg.gitMinor=$minor"
  ldflags+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=1970-01-01T00:00:00Z"
  echo "building the test control plane (Kubernetes $version); the first build takes 5-20 minutes..." >&2
  start=$(date +%s)
  mkdir -p "$cache/$hash"
  go build -modfile="$modfile" -trimpath -ldflags "$ldflags" -o "$out.tmp" .
  ln -sf controlplane "$cache/$hash/kubectl"
  mv "$out.tmp" "$out"
  echo "built $out in $(( $(date +%s) - start ))s" >&2
fi
echo "$out"
