#!/bin/sh
# One-shot ACL init of deploy/compose/secure.yml, run with the consul CLI in
# the Consul image: bootstrap the ACL system (or reuse the management token
# of an earlier run), give the agent its token, create the shipped member
# and edge policies and a read-only one for Prometheus, and write one token
# per member and edge into the tokens volume, where each reads its own through
# -consul.token-file. Tokens are written aside and renamed into place, as a
# Vault agent does. No token is ever printed.
set -eu
export CONSUL_HTTP_ADDR="${CONSUL_HTTP_ADDR:-consul:8500}"
secret() { sed -n 's/.*"SecretID": *"\([^"]*\)".*/\1/p'; }

# Bootstrap once; later runs reuse the management token.
if [ ! -s /secrets/management ]; then
	until consul acl bootstrap -format=json > /tmp/bootstrap.json 2>/tmp/bootstrap.err; do
		if grep -q "no longer allowed" /tmp/bootstrap.err; then
			echo "acl-init: the ACL system was bootstrapped by someone else, and /secrets/management is empty" >&2
			exit 1
		fi
		sleep 1
	done
	secret < /tmp/bootstrap.json > /secrets/management.tmp
	rm -f /tmp/bootstrap.json
	chmod 0400 /secrets/management.tmp
	mv /secrets/management.tmp /secrets/management
fi
CONSUL_HTTP_TOKEN="$(cat /secrets/management)"
export CONSUL_HTTP_TOKEN

policy() { # name rules-file
	consul acl policy read -name "$1" > /dev/null 2>&1 ||
		consul acl policy create -name "$1" -rules "@$2" > /dev/null
}
token() { # policy file owner
	[ -s "$2" ] && return 0
	consul acl token create -policy-name "$1" -format=json | secret > "$2.tmp"
	chown "$3" "$2.tmp"
	chmod 0400 "$2.tmp"
	mv "$2.tmp" "$2"
}

# The agent registers its own node and syncs services: node:write.
printf 'node_prefix "" {\n  policy = "write"\n}\n' > /tmp/agent.hcl
policy consul-agent /tmp/agent.hcl
policy stringsvc-member /policies/member-policy.hcl
printf 'service "stringsvc" {\n  policy = "read"\n}\nnode_prefix "" {\n  policy = "read"\n}\n' > /tmp/prometheus.hcl
policy prometheus /tmp/prometheus.hcl

token consul-agent /secrets/agent 0
consul acl set-agent-token agent "$(cat /secrets/agent)" > /dev/null

policy stringsvc-edge /policies/edge-policy.hcl

# Under default-deny ACLs intentions default to deny as well: members may
# call each other, and the edge may call them.
printf '{"Kind":"service-intentions","Name":"stringsvc","Sources":[{"Name":"stringsvc","Action":"allow"},{"Name":"stringsvc-edge","Action":"allow"}]}\n' > /tmp/intentions.json
consul config write /tmp/intentions.json > /dev/null

for member in ${MEMBERS:-node1 node2 node3}; do
	token stringsvc-member "/tokens/$member" 65532
done
for edge in ${EDGES:-}; do
	token stringsvc-edge "/tokens/$edge" 65532
done
token prometheus /tokens/prometheus 65534
# The config inits write the traffic entries of stringsvc and the edge's
# intentions (deploy/consul/config): that much, not the management token,
# which they never see (their token has a volume of its own). Consul lets
# config entries be written only with service:write, so this token could
# also register as stringsvc: it is on no member's volume.
printf 'service "stringsvc" {\n  policy = "write"\n}\nservice "stringsvc-edge" {\n  policy = "read"\n  intentions = "write"\n}\n' > /tmp/config-init.hcl
policy config-init /tmp/config-init.hcl
token config-init /init-token/config-init 0
echo "acl-init: policies and tokens in place"
