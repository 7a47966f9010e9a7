#!/usr/bin/env bash
# The test node's containerd and kubelet, run by node.sh as
#   unshare -m --propagation private inner.sh DIR TOOLS IMAGES KUBELET KUBELET_KUBECONFIG
# in a private mount namespace, so that every mount they make (container root
# filesystems, Secret volumes, sandbox /dev/shm) lives and dies with it:
# - the paths the kubelet and containerd hard-code (/var/lib/kubelet,
#   /var/log/pods, /var/log/containers, /run/containerd) are bind-mounted
#   from DIR, so nothing lands on the host's;
# - the kubelet's kernel-tunable check reads and writes files in DIR, bound over
#   the /proc/sys entries it would otherwise set on the host.
set -euo pipefail
dir=$1 tools=$2 images=$3 kubelet=$4 kubelet_kubeconfig=$5

sysctl() { # PATH VALUE
  local file=$dir/sysctl/${1//\//_}
  echo "$2" >"$file"
  mount --bind "$file" "/proc/sys/$1"
}
mkdir -p "$dir/sysctl"
sysctl vm/overcommit_memory 1
sysctl vm/panic_on_oom 0
sysctl kernel/panic 10
sysctl kernel/panic_on_oops 1

shadow() { # FROM ONTO
  mkdir -p "$1" "$2"
  mount --bind "$1" "$2"
}
shadow "$dir/kubelet/var-lib-kubelet" /var/lib/kubelet
shadow "$dir/kubelet/pod-logs" /var/log/pods
shadow "$dir/kubelet/container-logs" /var/log/containers
shadow "$dir/containerd/run" /run/containerd

export LD_LIBRARY_PATH=$tools/usr/lib/x86_64-linux-gnu
export PATH=$tools/usr/bin:$tools/usr/sbin:$PATH
# A pull would leave loopback: it fails at once instead.
HTTP_PROXY=http://127.0.0.1:9 HTTPS_PROXY=http://127.0.0.1:9 NO_PROXY= \
  containerd --config "$dir/containerd/config.toml" >"$dir/logs/containerd.log" 2>&1 &
echo $! >"$dir/containerd.pid"
socket=$dir/containerd/containerd.sock
for _ in $(seq 200); do
  [ -S "$socket" ] && break
  sleep 0.05
done
for image in "$images"/*.tar; do
  ctr --address "$socket" -n k8s.io images import "$image" >/dev/null
done
echo $$ >"$dir/kubelet.pid"
exec "$kubelet" --config="$dir/kubelet/config.yaml" --kubeconfig="$kubelet_kubeconfig" \
  --hostname-override=127.0.0.1 --v=1 >"$dir/logs/kubelet.log" 2>&1
