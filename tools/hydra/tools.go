//go:build tools

// Package tools pins Ory Hydra for scripts/install-hydra.sh.
package tools

import _ "github.com/ory/hydra/v2"
