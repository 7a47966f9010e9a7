#!/usr/bin/env bash
# Checks the README's run command as a new user meets it: with no KUBECONFIG it
# brings up a local control plane, installs CRDs and policies, runs the operator,
# applies examples/ and shows Ready apps registered at a local Ory Hydra whose
# token endpoint gives the printed curl a token; Ctrl-C then stops every process.
# With REGISTRAR_NODE=on (root), `make run` also starts a node and runs the
# operator on it from its image through the chart, beside an example workload:
# their Pods are shown Running, the operator's log (read through the kubelet)
# holds its mints, and Ctrl-C leaves no process, cgroup or mount of the node.
set -euo pipefail
cd "$(dirname "$0")/.."
work=$(mktemp -d /tmp/registrar-quickstart-XXXXXX)
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
log="$work/run.log"
node_mode=${REGISTRAR_NODE:-off}
env -u KUBECONFIG REGISTRAR_NODE="$node_mode" REGISTRAR_STATE_DIR="$work/cluster" REGISTRAR_METRICS_ADDR="127.0.0.1:$port" \
  setsid bash scripts/run.sh >"$log" 2>&1 &
pid=$!
cleanup() {
  kill -INT -- "-$pid" 2>/dev/null || true
}
trap cleanup EXIT

deadline=$((SECONDS + 300))
until grep -q "Ctrl-C stops everything" "$log"; do
  if ! kill -0 "$pid" 2>/dev/null || [ "$SECONDS" -ge "$deadline" ]; then
    echo "the quickstart did not come up:" >&2
    cat "$log" >&2
    exit 1
  fi
  sleep 0.5
done
sed -n '/^NAMESPACE/,/^$/p' "$log"
# The walkthrough is readable: no colour codes, no operator log lines in it.
if grep -q $'\x1b\[' "$log"; then echo "colour codes in the walkthrough:" >&2; cat -v "$log" >&2; exit 1; fi
if grep -q '"minted credentials"\|minted credentials' "$log"; then
  echo "the operator's log is mixed into the walkthrough:" >&2; cat "$log" >&2; exit 1
fi
if [ "$node_mode" = on ]; then
  grep -Eq "^registrar-system +registrar-[a-z0-9-]+ +1/1 +Running" "$log" ||
    { echo "the operator's Pod is not shown Running:" >&2; cat "$log" >&2; exit 1; }
  [ "$(grep -Ec "^default +reports-worker-[a-z0-9-]+ +1/1 +Running" "$log")" = 2 ] ||
    { echo "the example workload's two Pods are not shown Running:" >&2; cat "$log" >&2; exit 1; }
  grep -q "kubectl -n registrar-system logs deploy/registrar -f" "$log" ||
    { echo "the walkthrough does not say where the operator's log is" >&2; exit 1; }
  kubectl_bin="$(dirname "$(bash tests/controlplane/build.sh)")/kubectl"
  # Read through the apiserver and the kubelet; asked again for a while.
  deadline=$((SECONDS + 60))
  until KUBECONFIG="$work/cluster/kubeconfig" "$kubectl_bin" -n registrar-system logs deploy/registrar \
      >"$work/operator.log" 2>"$work/operator.err" && grep -q "minted credentials" "$work/operator.log"; do
    if [ "$SECONDS" -ge "$deadline" ]; then
      echo "the operator Pod's log holds no mint; kubectl logs said:" >&2
      cat "$work/operator.err" >&2
      tail -n 20 "$work/operator.log" >&2
      exit 1
    fi
    sleep 1
  done
else
  grep -q "The operator's log: tail -f $work/cluster/logs/registrar.log" "$log" ||
    { echo "the walkthrough does not say where the operator's log is" >&2; exit 1; }
  grep -q "minted credentials" "$work/cluster/logs/registrar.log" ||
    { echo "the operator's log file holds no mint" >&2; exit 1; }
fi
ready=$(sed -n '/^NAMESPACE  *NAME  *SCOPE/,/^$/p' "$log" | grep -c ' True ' || true)
[ "$ready" -ge 5 ] || { echo "expected 5 Ready apps, saw $ready" >&2; cat "$log" >&2; exit 1; }
grep -Eq "billing-portal-credentials +Opaque +[0-9]" "$log" || { echo "the credentials Secret was not shown" >&2; exit 1; }
grep -q 'Its answer, just now: {"access_token":"ory_at_' "$log" && grep -q '"token_type":"bearer"' "$log" ||
  { echo "the printed curl did not get a token from Hydra:" >&2; cat "$log" >&2; exit 1; }

# Ctrl-C (SIGINT to the process group, as a terminal sends it).
kill -INT -- "-$pid"
trap - EXIT
deadline=$((SECONDS + 60))
while kill -0 "$pid" 2>/dev/null; do
  [ "$SECONDS" -lt "$deadline" ] || { echo "the quickstart did not stop on Ctrl-C" >&2; exit 1; }
  sleep 0.2
done
deadline=$((SECONDS + 30))
while pgrep -f "$work/" >/dev/null; do
  [ "$SECONDS" -lt "$deadline" ] || { echo "processes outlived the quickstart:" >&2; pgrep -af "$work/" >&2; exit 1; }
  sleep 0.2
done
if [ "$node_mode" = on ]; then
  left=$(find /sys/fs/cgroup -maxdepth 2 -type d -name registrar-node; grep "$work/" /proc/self/mountinfo || true)
  [ -z "$left" ] || { echo "cgroups or mounts of the node outlived the quickstart:" >&2; echo "$left" >&2; exit 1; }
fi
rm -rf "$work"
echo "quickstart: $ready Ready apps shown, Ctrl-C stopped everything"
