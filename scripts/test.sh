#!/usr/bin/env bash
# The whole test suite, phase by phase, with the wall time of each: formatting,
# lints, the control-plane, helm, Hydra and krew builds, unit tests, end-to-end
# tests against a real control plane of the newest supported Kubernetes (the
# Helm chart and the krew manifest included), the chaos suite (its control
# plane restarted and frozen), the container image (built with buildah and
# checked), the tests on a real node, the suites that cross versions on each
# older supported Kubernetes, the quickstart, and a check that no
# control-plane process outlived the tests.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh

require_toolchain
export CARGO_TERM_COLOR=${CARGO_TERM_COLOR:-never}
# One full run gains little from incremental compilation and its cache doubles
# target/'s size (2.4 GiB of 8.4 GiB before debug info was trimmed); `cargo test`
# run by hand keeps it.
export CARGO_INCREMENTAL=${CARGO_INCREMENTAL:-0}

phase "format" check_format
phase "clippy" cargo clippy --locked --all-targets -- -D warnings
phase "control-plane build" build_controlplane
export REGISTRAR_CONTROLPLANE
# The older releases' control planes build in the background at the lowest
# priority while the suites on the newest run (the tests at scale and the
# chaos suite leave much of a core idle); their own phases below wait for what
# is left (tests/controlplane/build.sh takes a lock).
prebuild_older_controlplanes
phase "helm build" bash scripts/install-helm.sh
phase "Ory Hydra build" build_hydra
export REGISTRAR_HYDRA
phase "krew build" build_krew
export REGISTRAR_KREW
phase "nginx and Caddy (Debian packages, unpacked)" fetch_proxies
export REGISTRAR_PROXIES
phase "unit tests" cargo test --locked --lib --bins
phase "e2e tests" cargo test --locked --test e2e --test bare -- --test-threads "${E2E_THREADS:-4}"
phase "e2e at scale (10,000 consents, alone)" cargo test --locked --test e2e -- --ignored --test-threads 1
# One test at a time: each restarts or freezes the suite's control plane.
# --nocapture shows the recovery times (docs/benchmarks.md, "Recovery").
phase "chaos (apiserver restarted and frozen)" cargo test --locked --test chaos -- --test-threads 1 --nocapture
phase "image (buildah, checked; the e2e tests' binary)" env REGISTRAR_BINARY=target/debug/registrar bash scripts/check-image.sh
if [ "${E2E_NODE:-on}" != off ]; then
  phase "node build (kubelet, kube-scheduler, containerd, images)" build_node
  phase "e2e on a real node (kubelet, containerd)" cargo test --locked --test node -- --test-threads 2
  phase "quickstart on a node (REGISTRAR_NODE=on make run, then Ctrl-C)" env REGISTRAR_NODE=on bash scripts/check-quickstart.sh
fi
# The older supported Kubernetes releases: their control planes, and the
# suites that cross versions on each.
for minor in $(older_minors); do
  phase "control-plane build (Kubernetes $minor)" build_controlplane_for "$minor"
  phase "e2e on Kubernetes $minor (cross-version suites)" cross_version_suites "$minor"
  if [ "${E2E_NODE:-on}" != off ]; then
    phase "the chart on a node, Kubernetes $minor" chart_on_node "$minor"
  fi
done
phase "quickstart (make run, then Ctrl-C)" bash scripts/check-quickstart.sh
phase "benchmark smoke (200 apps)" make --no-print-directory bench-smoke
phase "no leftover control-plane processes" check_no_leftovers
summary
