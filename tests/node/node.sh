#!/usr/bin/env bash
# A real node beside a test control plane, for the tests that run Pods:
# kube-scheduler, the controllers Pods need (a second kube-controller-manager:
# Deployments, ReplicaSets, StatefulSets, DaemonSets, the root CA ConfigMap,
# node lifecycle), both of the control plane's release, and containerd with a kubelet under its own identity
# (system:node:127.0.0.1, held by the Node authorizer and NodeRestriction).
#
#   node.sh DIR CONTROLPLANE ADMIN_KUBECONFIG KUBELET_KUBECONFIG CA KUBELET_PORT HEALTHZ_PORT
#
# DIR is the node's state directory (every path of the node is under it). The
# test-only admission policies (config/test-only-policies.yaml: Pods on the
# host's network) are applied. Prints one JSON line once the node is Ready,
# then runs until its standard input closes (the test binary exited), and
# stops everything: the Pods' containers, the kubelet, containerd, the
# scheduler and the controllers; the mount namespace goes with its last
# process, the node's cgroups are removed, and so is its directory but its
# logs. Only loopback is used; host sysctls and iptables are never touched.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
dir=$1 controlplane=$2 admin=$3 kubelet_kubeconfig=$4 ca=$5 kubelet_port=$6 healthz_port=$7
bin=$(bash "$here/build/build.sh")
tools=$(bash "$repo/scripts/install-node-tools.sh")
images=$(bash "$here/images.sh")
kubectl() { "$controlplane" kubectl --kubeconfig="$admin" "$@"; }
cgroup_root=/$(basename "$dir")
started=$(date +%s%N) # the node's start-up, its builds (cached) aside

mkdir -p "$dir"/{logs,cni/net.d,kubelet/volume-plugins,containerd/run}
render() { sed -e "s|NODE_DIR|$dir|g; s|TOOLS|$tools|g; s|CGROUP_ROOT|$cgroup_root|g" \
  -e "s|KUBELET_PORT|$kubelet_port|g; s|HEALTHZ_PORT|$healthz_port|g" "$here/config/$1" >"$2"; }
render containerd.toml "$dir/containerd/config.toml"
render kubelet.yaml "$dir/kubelet/config.yaml"
cp "$here/config/99-loopback.conflist" "$dir/cni/net.d/"
echo "nameserver 127.0.0.1" >"$dir/kubelet/resolv.conf"
# The kubelet's cgroup root, in every hierarchy (cgroup v1), removed at the end.
for hierarchy in /sys/fs/cgroup/*/; do
  case $hierarchy in */unified/) continue ;; esac
  mkdir -p "$hierarchy$cgroup_root"
done

pids=()
stop() { # PID: TERM, then KILL after 10 s
  local pid=$1
  kill -TERM "$pid" 2>/dev/null || return 0
  for _ in $(seq 100); do
    kill -0 "$pid" 2>/dev/null || return 0
    sleep 0.1
  done
  kill -KILL "$pid" 2>/dev/null || true
}
teardown() {
  trap - EXIT INT TERM
  local socket=$dir/containerd/containerd.sock
  # The Pods, while the apiserver may still answer (never waited on long).
  timeout 8 "$controlplane" kubectl --kubeconfig="$admin" --request-timeout=5s delete pods --all --all-namespaces \
    --grace-period=1 --wait=false >/dev/null 2>&1 || true
  [ -f "$dir/kubelet.pid" ] && stop "$(cat "$dir/kubelet.pid")"
  # The shims of this node's containerd (they name its socket), with the
  # containers they run.
  for shim in $(pgrep -f -- "-address $socket" || true); do
    for child in $(pgrep -P "$shim" || true); do kill -KILL "$child" 2>/dev/null || true; done
    kill -KILL "$shim" 2>/dev/null || true
  done
  [ -f "$dir/containerd.pid" ] && stop "$(cat "$dir/containerd.pid")"
  for pid in "${pids[@]}"; do stop "$pid"; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  # Anything else that names the node's directory.
  for pid in $(pgrep -f -- "$dir" || true); do
    [ "$pid" = $$ ] || kill -KILL "$pid" 2>/dev/null || true
  done
  for hierarchy in /sys/fs/cgroup/*/; do
    [ -d "$hierarchy$cgroup_root" ] && find "$hierarchy$cgroup_root" -depth -type d -exec rmdir {} + 2>/dev/null || true
  done
  if [ -f "$dir/mountpoints-made" ]; then
    while read -r mountpoint; do rmdir "$mountpoint" 2>/dev/null || true; done <"$dir/mountpoints-made"
  fi
  # Everything but the logs (container layers, volumes, state).
  find "$dir" -mindepth 1 -maxdepth 1 ! -name logs -exec rm -rf {} + 2>/dev/null || true
}
trap teardown EXIT
trap 'exit 1' INT TERM

"$controlplane" kube-controller-manager --kubeconfig="$admin" --authentication-kubeconfig="$admin" \
  --authorization-kubeconfig="$admin" --leader-elect=false --secure-port=0 --root-ca-file="$ca" \
  --use-service-account-credentials=false \
  --controllers=deployment-controller,replicaset-controller,statefulset-controller,daemonset-controller,root-ca-certificate-publisher-controller,node-lifecycle-controller \
  >"$dir/logs/kube-controller-manager.log" 2>&1 </dev/null &
pids+=($!)
"$controlplane" kube-scheduler --kubeconfig="$admin" --authentication-kubeconfig="$admin" --authorization-kubeconfig="$admin" \
  --leader-elect=false --secure-port=0 >"$dir/logs/kube-scheduler.log" 2>&1 </dev/null &
pids+=($!)
server=$(kubectl config view --minify -o jsonpath='{.clusters[0].cluster.server}')
# Before 1.36, MutatingAdmissionPolicy is the beta the control plane turns on.
# (Read whole before it is searched: `grep -q` leaving a pipe early fails the
# pipeline under pipefail.)
resources=$(kubectl api-resources --api-group=admissionregistration.k8s.io -o wide)
policy_version=v1
grep -q '^mutatingadmissionpolicies .*admissionregistration.k8s.io/v1 ' <<<"$resources" || policy_version=v1beta1
sed -e "s|APISERVER_PORT|${server##*:}|g" \
  -e "s|^apiVersion: admissionregistration.k8s.io/v1$|apiVersion: admissionregistration.k8s.io/$policy_version|" \
  "$here/config/test-only-policies.yaml" >"$dir/test-only-policies.yaml"
kubectl apply --server-side -f "$dir/test-only-policies.yaml" >/dev/null
# The host paths the kubelet and containerd hard-code get the node's own
# directories mounted over them in its mount namespace (inner.sh); a mount
# point missing on the host is made here and removed at the end.
for mountpoint in /var/lib/kubelet /var/log/pods /var/log/containers /run/containerd; do
  if [ ! -e "$mountpoint" ]; then
    mkdir -p "$mountpoint" && echo "$mountpoint" >>"$dir/mountpoints-made"
  fi
done
unshare -m --propagation private bash "$here/inner.sh" "$dir" "$tools" "$images" "$bin/kubelet" \
  "$kubelet_kubeconfig" >"$dir/logs/inner.log" 2>&1 </dev/null &
inner=$!
pids+=($inner)

ready() {
  kubectl get node 127.0.0.1 -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}' 2>/dev/null | grep -qx True
}
# A Pod created now is put on the host's network, told where the apiserver
# is: the policy is in force.
policy_in_force() {
  kubectl run registrar-node-probe --image=registrar.local/busybox:1 --dry-run=server \
    -o jsonpath='{.spec.hostNetwork} {.spec.containers[0].env[0].value}' 2>/dev/null | grep -qx 'true 127.0.0.1'
}
deadline=$((SECONDS + 180))
until ready && policy_in_force; do
  if ! kill -0 "$inner" 2>/dev/null || [ "$SECONDS" -ge "$deadline" ]; then
    echo "the node did not become Ready; its logs are in $dir/logs" >&2
    tail -n 20 "$dir/logs/inner.log" "$dir/logs/kubelet.log" "$dir/logs/containerd.log" >&2 2>/dev/null || true
    exit 1
  fi
  sleep 0.2
done
millis=$((($(date +%s%N) - started) / 1000000))
printf '{"ready":true,"node":"127.0.0.1","dir":"%s","containerd":"%s","tools":"%s","millis":%d}\n' \
  "$dir" "$dir/containerd/containerd.sock" "$tools" "$millis"
cat >/dev/null || true
