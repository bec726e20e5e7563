#!/bin/sh
# One-shot: write the config entries named in $ENTRIES, in order, from
# /config, with the consul CLI, as an operator would with `consul config
# write`. Compose restarts it on failure until Consul answers; with ACLs,
# CONSUL_HTTP_TOKEN_FILE names the token (never printed).
set -eu
for entry in $ENTRIES; do
	consul config write "/config/$entry"
	echo "config-init: wrote $entry"
done
