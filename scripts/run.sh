#!/usr/bin/env bash
# Run registrar.
#
# With KUBECONFIG set: run the operator against that cluster (its CRDs must be
# installed: kubectl apply --server-side -f crds/).
# REGISTRAR_KUBERNETES=1.35 (or another supported minor) starts the local
# control plane of that release (tests/controlplane/build.sh).
# Without: start a local control plane (etcd, kube-apiserver,
# kube-controller-manager) in .local/cluster and, unless REGISTRAR_HYDRA=off,
# an Ory Hydra (in-memory database) that registrar registers every app at;
# install the CRDs, run the operator, and print how to point kubectl at it and
# a curl that gets a token from Hydra with an example app's Secret. Ctrl-C
# stops everything; the local cluster's state is discarded.
#
# With REGISTRAR_NODE=on (as root: the node mounts and makes cgroups), the local
# cluster gets a real node too (kubelet, containerd: tests/node/node.sh), and
# registrar runs on it as it ships: its image built here (scripts/image.sh) and
# the chart installed (one replica, metrics on loopback, Hydra as its
# authorization server), beside an example workload that gets tokens with its
# app's credentials (examples/node/).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh
require_toolchain

echo "==> building registrar"
cargo build --locked --quiet --bin registrar
operator=target/debug/registrar

if [ -n "${KUBECONFIG:-}" ]; then
  echo "==> running registrar against the cluster in KUBECONFIG=${KUBECONFIG}"
  exec "$operator" "$@"
fi

node_mode=${REGISTRAR_NODE:-off}
if [ "$node_mode" = on ] && [ "$(id -u)" != 0 ]; then
  echo "REGISTRAR_NODE=on needs root (the node mounts volumes and makes cgroups)" >&2
  exit 1
fi

echo "==> KUBECONFIG is not set: starting a local control plane"
controlplane=$(bash tests/controlplane/build.sh)
kubectl_bin="$(dirname "$controlplane")/kubectl"
state=${REGISTRAR_STATE_DIR:-$PWD/.local/cluster}
mkdir -p "$(dirname "$state")"

cp_pid=""
op_pid=""
hydra_pid=""
node_pid=""
stop() {
  trap - EXIT INT TERM
  echo
  echo "==> stopping"
  [ -n "$op_pid" ] && kill -TERM "$op_pid" 2>/dev/null && wait "$op_pid" 2>/dev/null
  # The node stops (containers, kubelet, containerd, its cgroups) when its input closes.
  [ -n "$node_pid" ] && exec 7>&- && wait "$node_pid" 2>/dev/null
  [ -n "$hydra_pid" ] && kill -TERM "$hydra_pid" 2>/dev/null && wait "$hydra_pid" 2>/dev/null
  [ -n "$cp_pid" ] && kill -TERM "$cp_pid" 2>/dev/null && wait "$cp_pid" 2>/dev/null
  echo "==> stopped"
}
trap stop EXIT INT TERM

# A kubeconfig left by an earlier run must not be mistaken for readiness.
rm -f "$state/kubeconfig"
"$controlplane" up --dir "$state" >/dev/null &
cp_pid=$!
while [ ! -f "$state/kubeconfig" ]; do
  if ! kill -0 "$cp_pid" 2>/dev/null; then
    echo "the local control plane failed to start; its logs are in $state/logs" >&2
    exit 1
  fi
  sleep 0.2
done
export KUBECONFIG="$state/kubeconfig"

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
# Admission policies take effect asynchronously: wait until a dry run shows one act.
policies_in_force() {
  local probe='{"apiVersion":"registrar.dev/v1alpha1","kind":"AppRegistration","metadata":{"name":"policy-probe","namespace":"default"},"spec":{"displayName":"probe","scope":"Group"}}'
  until [ -n "$(echo "$probe" | "$kubectl_bin" create --dry-run=server -f - \
      -o jsonpath='{.metadata.annotations.registrar\.dev/registered-by}' 2>/dev/null)" ]; do
    sleep 0.2
  done
}
if [ "$node_mode" = on ]; then
  echo "==> starting a node: kubelet, containerd, kube-scheduler (REGISTRAR_NODE=on)"
  node_dir="$(dirname "$state")/registrar-node"
  mkdir -p "$state/logs"
  rm -f "$state/node.in" && mkfifo "$state/node.in"
  bash tests/node/node.sh "$node_dir" "$controlplane" "$KUBECONFIG" "$state/kubelet.kubeconfig" "$state/pki/ca.crt" \
    "$(free_port)" "$(free_port)" <"$state/node.in" >"$state/node.out" 2>"$state/logs/node.log" &
  node_pid=$!
  exec 7>"$state/node.in"
  until grep -q '"ready":true' "$state/node.out" 2>/dev/null; do
    kill -0 "$node_pid" 2>/dev/null || { echo "the node did not start; see $state/logs/node.log" >&2; exit 1; }
    sleep 0.2
  done
  tools=$(bash scripts/install-node-tools.sh)
  node_ctr() {
    LD_LIBRARY_PATH="$tools/usr/lib/x86_64-linux-gnu" "$tools/usr/bin/ctr" \
      --address "$node_dir/containerd/containerd.sock" -n k8s.io "$@"
  }
else
  echo "==> installing the CRDs and the admission policies"
  "$kubectl_bin" apply --server-side --field-manager=registrar-install -f crds/
  "$kubectl_bin" wait --for=condition=Established --timeout=60s -f crds/ >/dev/null
  admission_resources=$("$kubectl_bin" api-resources --api-group=admissionregistration.k8s.io -o wide)
  if grep -q '^mutatingadmissionpolicies .*admissionregistration.k8s.io/v1 ' <<<"$admission_resources"; then
    "$kubectl_bin" apply --server-side --field-manager=registrar-install -f deploy/
    policies_in_force
  else
    # Kubernetes 1.35 (REGISTRAR_KUBERNETES=1.35): the ValidatingAdmissionPolicies
    # only. Registered By needs the webhook, which the chart sets up
    # (REGISTRAR_NODE=on); here the operator adds the finalizer itself.
    echo "    this Kubernetes has no MutatingAdmissionPolicy: Registered By is not recorded (REGISTRAR_NODE=on installs the chart, whose webhook records it)"
    awk 'BEGIN { RS = "\n---\n"; ORS = "\n---\n" } !/(^|\n)kind: MutatingAdmissionPolicy/' deploy/*.yaml |
      "$kubectl_bin" apply --server-side --field-manager=registrar-install -f -
  fi
fi

auth_args=()
if [ "${REGISTRAR_HYDRA:-on}" != "off" ]; then
  echo "==> starting Ory Hydra (REGISTRAR_HYDRA=off to skip)"
  hydra=$(bash scripts/install-hydra.sh)
  hydra_public=${REGISTRAR_HYDRA_PUBLIC_PORT:-$(free_port)}
  hydra_admin=${REGISTRAR_HYDRA_ADMIN_PORT:-$(free_port)}
  mkdir -p "$state/hydra"
  cat >"$state/hydra/hydra.yml" <<HYDRA
dsn: memory
serve:
  public: { host: 127.0.0.1, port: $hydra_public }
  admin: { host: 127.0.0.1, port: $hydra_admin }
urls:
  self: { issuer: "http://127.0.0.1:$hydra_public" }
  login: "http://127.0.0.1:$hydra_public/no-login-app"
  consent: "http://127.0.0.1:$hydra_public/no-consent-app"
secrets:
  system: ["$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')"]
oauth2:
  pkce: { enforced_for_public_clients: true }
log: { level: warn }
HYDRA
  mkdir -p "$state/logs"
  "$hydra" serve all --dev --sqa-opt-out --config "$state/hydra/hydra.yml" >"$state/logs/hydra.log" 2>&1 &
  hydra_pid=$!
  until curl -fsS "http://127.0.0.1:$hydra_admin/health/ready" >/dev/null 2>&1; do
    kill -0 "$hydra_pid" 2>/dev/null || { echo "Hydra exited; see $state/logs/hydra.log" >&2; exit 1; }
    sleep 0.2
  done
  auth_args=(--auth-server hydra --auth-server-admin-url "http://127.0.0.1:$hydra_admin"
    --auth-server-issuer "http://127.0.0.1:$hydra_public")
fi

metrics_addr=${REGISTRAR_METRICS_ADDR:-127.0.0.1:8080}
# The operator's log goes to a file, not into this walkthrough.
mkdir -p "$state/logs"
operator_log="$state/logs/registrar.log"
if [ "$node_mode" = on ]; then
  echo "==> building registrar's image and installing the chart on the node"
  archive=$(REGISTRAR_BINARY="$operator" IMAGE_TAG=dev bash scripts/image.sh 2>/dev/null)
  node_ctr images import "$archive" >/dev/null
  webhook_port=$(free_port)
  helm_values=(--set image.tag=dev --set image.pullPolicy=Never --set replicaCount=1
    --set "metrics.port=${metrics_addr##*:}" --set "metrics.bindAddress=${metrics_addr%:*}"
    --set admissionPolicies.webhook.bindAddress=127.0.0.1 --set "admissionPolicies.webhook.port=$webhook_port"
    --set "admissionPolicies.webhook.url=https://127.0.0.1:$webhook_port/mutate/appregistrations")
  if [ -n "$hydra_pid" ]; then
    helm_values+=(--set authServer.type=hydra --set "authServer.adminUrl=http://127.0.0.1:$hydra_admin"
      --set "authServer.issuer=http://127.0.0.1:$hydra_public")
  fi
  "$(bash scripts/install-helm.sh)" install registrar charts/registrar --namespace registrar-system \
    --create-namespace "${helm_values[@]}" >/dev/null
  policies_in_force
  "$kubectl_bin" -n registrar-system rollout status deployment/registrar --timeout=180s >/dev/null
else
  "$operator" --metrics-addr "$metrics_addr" "${auth_args[@]}" "$@" >"$operator_log" 2>&1 &
  op_pid=$!
fi

echo "==> waiting for the operator to be ready"
until curl -fsS "http://$metrics_addr/readyz" >/dev/null 2>&1; do
  if [ -n "$op_pid" ] && ! kill -0 "$op_pid" 2>/dev/null; then
    echo "the operator exited; its log:" >&2
    cat "$operator_log" >&2
    exit 1
  fi
  sleep 0.2
done

echo "==> applying examples/ (one app of each kind, and a shared app with consents)"
"$kubectl_bin" apply -f examples/confidential-app.yaml -f examples/public-client.yaml \
  -f examples/workload-restart.yaml -f examples/organizations/
"$kubectl_bin" wait --for=condition=Ready appreg --all --all-namespaces --timeout=120s >/dev/null
if [ "$node_mode" = on ]; then
  "$kubectl_bin" apply -f examples/node/
  "$kubectl_bin" rollout status deployment/reports-worker --timeout=120s >/dev/null
  echo
  "$kubectl_bin" get pods -A
fi
echo
"$kubectl_bin" get appregs -A
echo
"$kubectl_bin" get appconsents -A
echo
echo "The Client ID and Client Secret of billing-portal are in this Secret:"
"$kubectl_bin" get secret billing-portal-credentials

cat <<MSG

  registrar runs against a local control plane. In another terminal:

    export KUBECONFIG=$KUBECONFIG
    kubectl get appregs -A              # any kubectl; $kubectl_bin matches the server
    kubectl annotate appreg billing-portal registrar.dev/rotate=\$(date +%s) --overwrite
    kubectl get secret billing-portal-credentials -o yaml

MSG
if [ "$node_mode" = on ]; then
  cat <<MSG
  registrar runs on the node as a Pod, from the image built here:
    kubectl -n registrar-system logs deploy/registrar -f     # the operator's log
    kubectl logs deploy/reports-worker -f                    # a workload getting tokens
  Rotate reports-worker and watch registrar roll it onto the new secret:
    kubectl annotate appreg reports-worker registrar.dev/rotate=\$(date +%s) --overwrite
  Metrics: http://$metrics_addr/metrics. Component logs: $state/logs and $node_dir/logs.
MSG
else
  cat <<MSG
  The operator's log: tail -f $operator_log
  Metrics: http://$metrics_addr/metrics. Component logs: $state/logs.
MSG
fi
if [ -n "$hydra_pid" ]; then
  secret() { "$kubectl_bin" get secret reports-oauth -o "jsonpath={.data.$1}" | base64 -d; }
  token_request=(curl -sS -u "$(secret OAUTH_CLIENT_ID):$(secret OAUTH_CLIENT_SECRET)"
    -d grant_type=client_credentials -d scope=reports.read "$(secret token_url)")
  cat <<MSG

  Every app is registered at Ory Hydra (admin http://127.0.0.1:$hydra_admin, issuer
  http://127.0.0.1:$hydra_public). The reports-worker app's Secret gets a token there:

    s() { kubectl get secret reports-oauth -o "jsonpath={.data.\$1}" | base64 -d; }
    curl -u "\$(s OAUTH_CLIENT_ID):\$(s OAUTH_CLIENT_SECRET)" -d grant_type=client_credentials \\
      -d scope=reports.read "\$(s token_url)"

MSG
  # The token itself is a credential: shown cut short.
  echo "  Its answer, just now: $("${token_request[@]}" | sed -E 's/"access_token":"(.{12})[^"]*"/"access_token":"\1…"/')"
fi
cat <<MSG

  Ctrl-C stops everything.

MSG

# Stop when the operator (or the node it runs on) or the control plane exits.
wait -n ${op_pid:+"$op_pid"} ${node_pid:+"$node_pid"} "$cp_pid" || true
