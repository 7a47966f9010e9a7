# shellcheck shell=bash
# Shared by scripts/test.sh and scripts/run.sh.

PHASES=()

# phase NAME CMD...: run CMD, print its wall time, remember it for the summary.
phase() {
  local name=$1; shift
  local start=$SECONDS
  echo "==> ${name}"
  "$@"
  local took=$((SECONDS - start))
  PHASES+=("$(printf '%-40s %5ss' "$name" "$took")")
  echo "==> ${name}: done in ${took}s"
}

summary() {
  echo "==> phase times"
  printf '    %s\n' "${PHASES[@]}"
  echo "==> disk: target/ $(du -sh target 2>/dev/null | cut -f1)"
}

require_toolchain() {
  local missing=()
  for tool in cargo go make; do
    command -v "$tool" >/dev/null || missing+=("$tool")
  done
  cargo fmt --version >/dev/null 2>&1 || missing+=("rustfmt (rustup component add rustfmt)")
  cargo clippy --version >/dev/null 2>&1 || missing+=("clippy (rustup component add clippy)")
  if [ "${#missing[@]}" -gt 0 ]; then
    echo "missing tools: ${missing[*]}" >&2
    exit 1
  fi
}

check_format() {
  cargo fmt --all -- --check
  local unformatted
  unformatted=$(gofmt -l tests/controlplane)
  if [ -n "$unformatted" ]; then
    echo "gofmt would change: $unformatted" >&2
    return 1
  fi
}

# Sets REGISTRAR_CONTROLPLANE to the control-plane binary, building it if needed.
build_controlplane() {
  REGISTRAR_CONTROLPLANE=$(bash tests/controlplane/build.sh)
  echo "control plane: ${REGISTRAR_CONTROLPLANE}"
}

# The older Kubernetes minors registrar supports, oldest first: one per
# tests/controlplane/go.<MINOR>.mod (go.mod pins the newest).
older_minors() {
  local f
  for f in tests/controlplane/go.*.mod; do
    [ -e "$f" ] || continue
    f=${f##*/go.}
    echo "${f%.mod}"
  done | sort -V
}

# Starts building every older release's control plane in the background, at
# the lowest priority (logged to target/prebuild-controlplanes.log); stopped
# when the calling script exits.
prebuild_older_controlplanes() {
  local minors
  minors=$(older_minors)
  [ -n "$minors" ] || return 0
  mkdir -p target
  # A session of its own, so the whole build (go and its compilers) is stopped
  # at once. A new session is also a scheduling group of its own (autogroup),
  # where nice values count only among its processes: the group's own nice
  # keeps it from taking half the machine from the suites.
  setsid nice -n 19 bash -c 'echo 19 >/proc/self/autogroup 2>/dev/null
    for minor in "$@"; do bash tests/controlplane/build.sh "$minor" >/dev/null || exit 1; done' \
    prebuild $minors >target/prebuild-controlplanes.log 2>&1 </dev/null &
  PREBUILD_PID=$!
  trap 'kill -- "-$PREBUILD_PID" 2>/dev/null || true' EXIT
  echo "building the control planes of Kubernetes $(echo $minors | tr ' ' ',') in the background (pid $PREBUILD_PID)"
}

# build_controlplane_for MINOR: builds (or finds) that release's control plane.
build_controlplane_for() {
  echo "control plane (Kubernetes $1): $(bash tests/controlplane/build.sh "$1")"
}

# The suites that cross versions, run on an older release's control plane
# (docs/development.md, "Kubernetes versions"): the CRDs with the admission
# policies or the webhook, the lifecycle, consents, the tenancy attacks (e2e
# and bare), the chart rendered and run under its RBAC, the kubectl plugin.
cross_version_suites() {
  local controlplane
  controlplane=$(bash tests/controlplane/build.sh "$1")
  REGISTRAR_CONTROLPLANE=$controlplane cargo test --locked --test e2e -- --test-threads "${E2E_THREADS:-4}" \
    registration:: consent:: tenancy:: chart:: plugin:: webhook::
  REGISTRAR_CONTROLPLANE=$controlplane cargo test --locked --test bare -- --test-threads "${E2E_THREADS:-4}"
}

# chart_on_node MINOR: the chart installed on a real node beside that release's control plane.
chart_on_node() {
  REGISTRAR_CONTROLPLANE=$(bash tests/controlplane/build.sh "$1") cargo test --locked --test node -- \
    --test-threads 1 chart::
}

# Sets REGISTRAR_HYDRA to the Ory Hydra binary, building it if needed.
build_hydra() {
  REGISTRAR_HYDRA=$(bash scripts/install-hydra.sh)
  echo "hydra: ${REGISTRAR_HYDRA}"
}

# Sets REGISTRAR_KREW to the krew binary, building it if needed.
build_krew() {
  REGISTRAR_KREW=$(bash scripts/install-krew.sh)
  echo "krew: ${REGISTRAR_KREW}"
}

# Sets REGISTRAR_PROXIES to where nginx and Caddy are unpacked, fetching them if needed.
fetch_proxies() {
  REGISTRAR_PROXIES=$(bash scripts/install-proxies.sh)
  echo "proxies: ${REGISTRAR_PROXIES}"
}

# Builds (or finds cached) the test node's kubelet, its container tools and
# its images (tests/node/).
build_node() {
  echo "node binaries: $(bash tests/node/build/build.sh)"
  echo "node tools: $(bash scripts/install-node-tools.sh)"
  echo "node images: $(bash tests/node/images.sh)"
}

# Every harness state directory starts with registrar-e2e-, every control-plane
# and node process names its state directory on its command line, and the test
# node's cgroups are named after its directory; its mounts live in a mount
# namespace of their own, so none may show in this one.
check_no_leftovers() {
  local deadline=$((SECONDS + 60))
  while pgrep -f 'registrar-e2e-' >/dev/null; do
    if [ "$SECONDS" -ge "$deadline" ]; then
      echo "control-plane, node, Hydra or proxy processes outlived the tests:" >&2
      pgrep -af 'registrar-e2e-' >&2
      return 1
    fi
    sleep 0.5
  done
  local cgroups mounts
  cgroups=$(find /sys/fs/cgroup -maxdepth 2 -type d -name 'registrar-e2e-*' 2>/dev/null || true)
  if [ -n "$cgroups" ]; then
    echo "cgroups of the test node outlived the tests:" >&2
    echo "$cgroups" >&2
    return 1
  fi
  mounts=$(grep 'registrar-e2e-' /proc/self/mountinfo || true)
  if [ -n "$mounts" ]; then
    echo "mounts of the test node outlived the tests:" >&2
    echo "$mounts" >&2
    return 1
  fi
  echo "no etcd, kube-apiserver, kube-controller-manager, kubelet, containerd, shim, Hydra, nginx or Caddy process left; no cgroup or mount of the test node"
}
