#!/usr/bin/env bash
# Builds the test node's own images once, with no registry, and prints the
# directory of their docker-archives:
#   pause.tar    registrar.local/pause:1, the Pod sandbox: Kubernetes' pause.c
#                (from the k8s.io/kubernetes module the node is built from),
#                compiled static
#   busybox.tar  registrar.local/busybox:1, Debian's static busybox, uid 65532:
#                the payload of the test workloads
# Cached under ${REGISTRAR_CACHE:-~/.cache/registrar}/node-images/<hash>.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
export GOTOOLCHAIN=local GOFLAGS=-mod=readonly
version=$(sed -n 's#^\(require\)\{0,1\}[[:space:]]*k8s\.io/kubernetes \(v[0-9.]*\).*#\2#p' "$here/build/go.mod")
tools=$(bash "$repo/scripts/install-node-tools.sh")
hash=$( (echo "$version"; cat "$0"; ls -l "$tools/bin/busybox") | sha256sum | cut -c1-16)
cache=${REGISTRAR_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/registrar}/node-images
out="$cache/$hash"
if [ -f "$out/pause.tar" ] && [ -f "$out/busybox.tar" ]; then
  echo "$out"
  exit 0
fi
mkdir -p "$cache"
exec 9>"$cache/.lock"
flock 9
if [ ! -f "$out/pause.tar" ] || [ ! -f "$out/busybox.tar" ]; then
  work=$(mktemp -d "$cache/work.XXXXXX")
  trap 'rm -rf "$work"' EXIT
  module=$(cd "$here/build" && go mod download -json "k8s.io/kubernetes@$version" | sed -n 's/.*"Dir": "\(.*\)".*/\1/p')
  mkdir -p "$work/pause" "$work/busybox/etc" "$work/busybox/tmp"
  gcc -Os -static -o "$work/pause/pause" "$module/build/pause/linux/pause.c"
  strip "$work/pause/pause"
  install -m 0755 "$tools/bin/busybox" "$work/busybox/busybox"
  printf 'nonroot:x:65532:65532:nonroot:/nonexistent:/busybox\n' >"$work/busybox/etc/passwd"
  printf 'nonroot:x:65532:\n' >"$work/busybox/etc/group"
  chmod 1777 "$work/busybox/tmp"
  # shellcheck source=../../scripts/buildah-env.sh
  source "$repo/scripts/buildah-env.sh" "$work/buildah"
  mkdir -p "$out.tmp"
  image() { # NAME ROOTFS ENTRYPOINT USER
    local container
    container=$(buildah from scratch)
    buildah copy "$container" "$2/" / >/dev/null
    buildah config --user "$4" --entrypoint "$3" --cmd '' "$container"
    buildah commit --quiet --rm "$container" "registrar.local/$1:1" >/dev/null
    buildah push --quiet "registrar.local/$1:1" "docker-archive:$out.tmp/$1.tar:registrar.local/$1:1"
  }
  image pause "$work/pause" '["/pause"]' 65535:65535
  image busybox "$work/busybox" '["/busybox"]' 65532:65532
  rm -rf "$out" && mv "$out.tmp" "$out"
fi
echo "$out"
