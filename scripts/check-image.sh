#!/usr/bin/env bash
# Builds registrar's image (scripts/image.sh) and checks what it holds: one
# layer with the binary, the libraries it links and nothing else that could run
# (no shell, no package manager); uid 65532; the OCI labels and annotations;
# and the binary starts inside that root filesystem alone (chroot: a missing
# library would stop it). Prints the image's size, and holds the release
# image under 25 MB. With REGISTRAR_BINARY set (the suite passes the binary
# its e2e tests built, in the dev profile), that binary goes in the image
# instead, and its size is only reported.
set -euo pipefail
cd "$(dirname "$0")/.."
archive=$(bash scripts/image.sh)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
tar -xf "$archive" -C "$work"
limit_mb=25
[ -z "${REGISTRAR_BINARY:-}" ] || limit_mb=0
python3 - "$work" "$archive" "$limit_mb" <<'EOF'
import json, os, sys, tarfile
work, archive, limit_mb = sys.argv[1], sys.argv[2], int(sys.argv[3])
fail = []
manifest = json.load(open(os.path.join(work, "manifest.json")))
[image] = manifest
config = json.load(open(os.path.join(work, image["Config"])))
c = config["config"]
tag = image["RepoTags"][0]
if c.get("User") != "65532:65532":
    fail.append(f"runs as {c.get('User')!r}, not 65532:65532")
if c.get("Entrypoint") != ["/usr/local/bin/registrar"]:
    fail.append(f"entrypoint {c.get('Entrypoint')}")
labels = c.get("Labels") or {}
for key in ("source", "revision", "version"):
    if not labels.get(f"org.opencontainers.image.{key}"):
        fail.append(f"no label org.opencontainers.image.{key}")
version = labels.get("org.opencontainers.image.version", "")
if not tag.split(":")[-1].startswith(version + "-"):
    fail.append(f"tag {tag} is not <version>-<commit>")
if len(image["Layers"]) != 1:
    fail.append(f"{len(image['Layers'])} layers, not one")
files, size = [], 0
for layer in image["Layers"]:
    with tarfile.open(os.path.join(work, layer)) as t:
        for m in t.getmembers():
            name = m.name.lstrip("./")
            if m.isfile() or m.issym():
                files.append(name)
                size += m.size
allowed_prefixes = ("usr/local/bin/registrar", "lib/", "lib64/", "usr/lib/", "etc/ssl/certs/ca-certificates.crt",
                    "etc/passwd", "etc/group")
for name in files:
    if not name.startswith(allowed_prefixes):
        fail.append(f"unexpected file {name}")
    base = os.path.basename(name)
    if base in ("sh", "bash", "busybox", "apt", "apt-get", "dpkg", "rpm", "apk"):
        fail.append(f"a shell or package manager: {name}")
libraries = [n for n in files if ".so" in os.path.basename(n)]
if limit_mb and size >= limit_mb * 1024 * 1024:
    fail.append(f"{size} bytes, over {limit_mb} MB")
print(f"image {tag}: {size / 1024 / 1024:.1f} MiB in one layer ({len(files)} files: the binary, "
      f"{len(libraries)} libraries, a CA bundle, passwd and group); archive {os.path.getsize(archive) / 1024 / 1024:.1f} MiB")
if fail:
    print("the image is not as it should be:\n  " + "\n  ".join(fail), file=sys.stderr)
    sys.exit(1)
EOF
# The binary runs with nothing but what the image holds.
mkdir "$work/rootfs"
for layer in $(python3 -c 'import json,sys; print(" ".join(json.load(open(sys.argv[1]))[0]["Layers"]))' "$work/manifest.json"); do
  tar -xf "$work/$layer" -C "$work/rootfs"
done
if [ "$(id -u)" != 0 ]; then
  echo "not root: the binary is not started in the image's root filesystem (chroot needs root)" >&2
elif ! chroot --userspec=65532:65532 "$work/rootfs" /usr/local/bin/registrar --version; then
  echo "the image's binary does not start in its own root filesystem" >&2
  exit 1
fi
