# registrar's two set-up commands (see README.md):
#   make run    run registrar against $KUBECONFIG, or against a local control plane
#   make test   the whole test suite, exactly what CI runs (.ci/run)
.PHONY: run test bench bench-smoke image crds controlplane clean-cache

run:
	@bash scripts/run.sh

test:
	@bash scripts/test.sh

# The benchmark harness at full size (BENCH_APPS=10000 by default; see
# benches/registrar.rs for every knob). Prints a table and writes the table part
# of docs/benchmarks.md.
bench:
	@REGISTRAR_CONTROLPLANE=$$(bash tests/controlplane/build.sh) REGISTRAR_HYDRA=$$(bash scripts/install-hydra.sh) \
		BENCH_REPORT=docs/benchmarks-table.md \
		cargo bench --locked --bench registrar

# A small run of the same harness (what CI runs so it cannot rot; no targets judged).
bench-smoke:
	@REGISTRAR_CONTROLPLANE=$$(bash tests/controlplane/build.sh) REGISTRAR_HYDRA=$$(bash scripts/install-hydra.sh) BENCH_APPS=$${BENCH_APPS:-200} BENCH_CONSENTS=100 \
		BENCH_STEADY=20 BENCH_REGISTRY_SECONDS=2 BENCH_HYDRA_APPS=$${BENCH_HYDRA_APPS:-50} BENCH_LEDGER_ENTRIES=$${BENCH_LEDGER_ENTRIES:-1000} cargo bench --locked --profile dev --bench registrar

# registrar's container image, built here with Debian's buildah and no registry
# (scripts/image.sh): prints the docker-archive it wrote under target/image/.
image:
	@bash scripts/image.sh

# Regenerate crds/ from the Rust API types.
crds:
	cargo run --locked --quiet --bin crdgen

# Build (or find in the cache) the test control-plane binary and print its path.
controlplane:
	@bash tests/controlplane/build.sh

# Forget cached control-plane binaries (the Go build cache stays).
clean-cache:
	rm -rf "$${REGISTRAR_CACHE:-$${XDG_CACHE_HOME:-$$HOME/.cache}/registrar}/controlplane"
