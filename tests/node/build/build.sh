#!/usr/bin/env bash
# Build the test node's kubelet (from the Go module proxy) once per set of
# inputs, and print the directory that holds it. go.mod pins it to the oldest
# Kubernetes release registrar supports: a kubelet may be up to three minors
# older than its apiserver, never newer, so one kubelet serves the control
# plane of every supported release (kube-scheduler, which must match the
# apiserver, comes with the control plane).
#
# Cached outside the repository, like the control plane, under
#   ${REGISTRAR_CACHE:-${XDG_CACHE_HOME:-~/.cache}/registrar}/node/<hash>/
# where <hash> covers go.mod, go.sum and the Go version. Progress goes to
# stderr, the directory to stdout.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
cd "$here"
export GOTOOLCHAIN=local GOFLAGS=-mod=readonly

hash=$( (go version; cat go.mod go.sum) | sha256sum | cut -c1-16)
cache=${REGISTRAR_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/registrar}/node
out="$cache/$hash"
if [ -x "$out/kubelet" ]; then
  echo "$out"
  exit 0
fi

mkdir -p "$cache"
exec 9>"$cache/.lock"
flock 9
if [ ! -x "$out/kubelet" ]; then
  version=$(sed -n 's#^\(require\)\{0,1\}[[:space:]]*k8s\.io/kubernetes \(v[0-9.]*\).*#\2#p' go.mod)
  [ -n "$version" ] || { echo "cannot read the Kubernetes version from go.mod" >&2; exit 1; }
  major=${version#v}; major=${major%%.*}
  minor=${version#v*.}; minor=${minor%%.*}
  pkg=k8s.io/component-base/version
  ldflags="-s -w -X $pkg.gitVersion=$version -X $pkg.gitMajor=$major -X $pkg.gitMinor=$minor"
  ldflags+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=1970-01-01T00:00:00Z"
  mkdir -p "$out"
  for component in kubelet; do
    echo "building the test node's $component (Kubernetes $version)..." >&2
    start=$(date +%s)
    go build -trimpath -ldflags "$ldflags" -o "$out/$component.tmp" "k8s.io/kubernetes/cmd/$component"
    mv "$out/$component.tmp" "$out/$component"
    echo "built $component in $(( $(date +%s) - start ))s" >&2
  done
fi
echo "$out"
