#!/usr/bin/env bash
# Lays out registrar's image root filesystem in DIR from BINARY: the binary
# (stripped), exactly the shared libraries it links (found by ldd, copied from
# this machine), a CA bundle, and /etc/passwd and /etc/group naming uid and gid
# 65532. No shell, no package manager, nothing else. Used by scripts/image.sh
# (buildah, here) and by the Dockerfile (for those who build with a registry).
#   scripts/image-rootfs.sh BINARY DIR
set -euo pipefail
binary=$1
root=$2
[ -x "$binary" ] || { echo "no executable at $binary" >&2; exit 1; }
mkdir -p "$root"
install -D -m 0755 "$binary" "$root/usr/local/bin/registrar"
strip --strip-all "$root/usr/local/bin/registrar"
# `ldd` prints `name => /path (addr)` for each library and `/path (addr)` for
# the dynamic loader; each is copied, with its mode (the loader is executed),
# to the path the binary asks for.
ldd "$binary" | awk '$2 == "=>" && $3 ~ /^\// { print $3 } $1 ~ /^\// { print $1 }' | while read -r lib; do
  real=$(readlink -f "$lib")
  install -D -m "$(stat -c %a "$real")" "$real" "$root$lib"
done
install -D -m 0644 /etc/ssl/certs/ca-certificates.crt "$root/etc/ssl/certs/ca-certificates.crt"
printf 'nonroot:x:65532:65532:nonroot:/nonexistent:/sbin/nologin\n' >"$root/etc/passwd"
printf 'nonroot:x:65532:\n' >"$root/etc/group"
chmod 0644 "$root/etc/passwd" "$root/etc/group"
mkdir -p -m 1777 "$root/tmp"
