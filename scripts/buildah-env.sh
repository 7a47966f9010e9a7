# Sourced: `buildah` as a function running Debian's buildah (unpacked by
# scripts/install-node-tools.sh) with its storage and configuration in WORK
# (vfs: no mounts), pulling from no registry:
#   source scripts/buildah-env.sh WORK
#   container=$(buildah from scratch) ...
#   buildah push "$image" "docker-archive:$PWD/x.tar:$image"
buildah_tools=$(bash "$(dirname "${BASH_SOURCE[0]}")/install-node-tools.sh")
buildah_work=$1
mkdir -p "$buildah_work"
cat >"$buildah_work/storage.conf" <<CONF
[storage]
driver = "vfs"
runroot = "$buildah_work/run"
graphroot = "$buildah_work/graph"
CONF
echo '{"default": [{"type": "reject"}], "transports": {"docker-archive": {"": [{"type": "insecureAcceptAnything"}]}}}' \
  >"$buildah_work/policy.json"
echo 'unqualified-search-registries = []' >"$buildah_work/registries.conf"
buildah() {
  local command=$1
  shift
  local policy=()
  case $command in from | commit | push) policy=(--signature-policy "$buildah_work/policy.json") ;; esac
  LD_LIBRARY_PATH="$buildah_tools/usr/lib/x86_64-linux-gnu" CONTAINERS_STORAGE_CONF="$buildah_work/storage.conf" \
    CONTAINERS_REGISTRIES_CONF="$buildah_work/registries.conf" "$buildah_tools/usr/bin/buildah" "$command" "${policy[@]}" "$@"
}
