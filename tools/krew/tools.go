//go:build tools

// Package tools pins krew for scripts/install-krew.sh.
package tools

import _ "sigs.k8s.io/krew/cmd/krew"
