#!/usr/bin/env bash
# Fetch Debian's container tools once, unpack them outside the repository
# without installing or starting anything, and print the directory they were
# unpacked into:
#   usr/bin/buildah                builds registrar's image (scripts/image.sh)
#   usr/bin/containerd, ctr, containerd-shim-runc-v2, usr/sbin/runc
#                                  a container runtime for a test node
#   usr/lib/cni/loopback           the node's only network plugin
#   bin/busybox                    a static payload for test workloads
# with the libraries Debian's own machine lacks (usr/lib/x86_64-linux-gnu:
# run them with LD_LIBRARY_PATH there). apt keeps its own lists in the cache,
# so no system state changes.
set -euo pipefail
cache=${REGISTRAR_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/registrar}/tools/node
root="$cache/root"
packages=(buildah libgpgme11 libsubid4 containerd runc containernetworking-plugins busybox-static)
ready() {
  [ -x "$root/usr/bin/buildah" ] && [ -x "$root/usr/bin/containerd" ] && [ -x "$root/usr/sbin/runc" ] &&
    [ -x "$root/usr/lib/cni/loopback" ] && [ -x "$root/bin/busybox" ]
}
if ready; then
  echo "$root"
  exit 0
fi
mkdir -p "$cache"
exec 9>"$cache/.lock"
flock 9
if ! ready; then
  echo "fetching Debian's ${packages[*]} (unpacked, not installed)..." >&2
  work=$(mktemp -d "$cache/work.XXXXXX")
  mkdir -p "$work/lists/partial" "$work/archives/partial"
  apt=(apt-get -q -o "Dir::State::Lists=$work/lists" -o "Dir::Cache=$work"
    -o "Dir::Cache::archives=$work/archives" -o "Debug::NoLocking=1" -o "APT::Sandbox::User=$(id -un)")
  "${apt[@]}" update >&2
  (cd "$work" && "${apt[@]}" download "${packages[@]}" >&2)
  rm -rf "$root.tmp"
  for deb in "$work"/*.deb; do dpkg-deb -x "$deb" "$root.tmp"; done
  rm -rf "$root" && mv "$root.tmp" "$root"
  rm -rf "$work"
  export LD_LIBRARY_PATH="$root/usr/lib/x86_64-linux-gnu"
  for binary in usr/bin/buildah usr/bin/containerd usr/bin/containerd-shim-runc-v2 usr/sbin/runc usr/lib/cni/loopback; do
    if ldd "$root/$binary" | grep -q 'not found'; then
      echo "$binary needs a library this machine lacks:" >&2
      ldd "$root/$binary" | grep 'not found' >&2
      exit 1
    fi
  done
  "$root/usr/bin/buildah" --version >&2
  "$root/usr/bin/containerd" --version >&2
fi
echo "$root"
