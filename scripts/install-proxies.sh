#!/usr/bin/env bash
# Fetch Debian's nginx (with auth_request) and Caddy (with forward_auth)
# packages once, unpack them outside the repository without installing or
# starting anything, and print the directory they were unpacked into
# (usr/sbin/nginx, usr/bin/caddy under it). apt keeps its own lists in the
# cache, so no root and no system state are needed.
set -euo pipefail
cache=${REGISTRAR_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/registrar}/tools/proxies
root="$cache/root"
if [ -x "$root/usr/sbin/nginx" ] && [ -x "$root/usr/bin/caddy" ]; then
  echo "$root"
  exit 0
fi
mkdir -p "$cache"
exec 9>"$cache/.lock"
flock 9
if [ ! -x "$root/usr/sbin/nginx" ] || [ ! -x "$root/usr/bin/caddy" ]; then
  echo "fetching Debian's nginx and caddy packages (unpacked, not installed)..." >&2
  work=$(mktemp -d "$cache/work.XXXXXX")
  mkdir -p "$work/lists/partial" "$work/archives/partial"
  apt=(apt-get -q -o "Dir::State::Lists=$work/lists" -o "Dir::Cache=$work"
    -o "Dir::Cache::archives=$work/archives" -o "Debug::NoLocking=1" -o "APT::Sandbox::User=$(id -un)")
  "${apt[@]}" update >&2
  (cd "$work" && "${apt[@]}" download nginx nginx-common caddy >&2)
  rm -rf "$root.tmp"
  for deb in "$work"/*.deb; do dpkg-deb -x "$deb" "$root.tmp"; done
  rm -rf "$root" && mv "$root.tmp" "$root"
  rm -rf "$work"
  "$root/usr/sbin/nginx" -v >&2
  echo "caddy $("$root/usr/bin/caddy" version)" >&2
fi
echo "$root"
