//go:build tools

// Package tools pins the Compose v2 CLI (github.com/docker/compose/v2),
// built by `make compose-v2` into bin/docker-compose-v2 and installed as the
// Docker CLI plugin, for machines where `docker compose` is missing. Its
// dependency graph stays in this module, out of the service's go.mod.
package tools

import _ "github.com/docker/compose/v2/cmd"
