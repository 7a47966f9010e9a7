# registrar's two set-up commands (see README.md):
#   make run    run registrar against $KUBECONFIG, or against a local control plane
#   make test   the whole test suite, exactly what CI runs (.ci/run)
.PHONY: run test crds controlplane clean-cache

run:
	@bash scripts/run.sh

test:
	@bash scripts/test.sh

# Regenerate crds/ from the Rust API types.
crds:
	cargo run --locked --quiet --bin crdgen

# Build (or find in the cache) the test control-plane binary and print its path.
controlplane:
	@bash tests/controlplane/build.sh

# Forget cached control-plane binaries (the Go build cache stays).
clean-cache:
	rm -rf "$${REGISTRAR_CACHE:-$${XDG_CACHE_HOME:-$$HOME/.cache}/registrar}/controlplane"
