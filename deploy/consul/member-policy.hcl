# The smallest ACL policy a stringsvc member needs, found by trying each
# call against an agent with default_policy = "deny" (see the README):
#
#   register, deregister, watch its own entry   service:write on its name
#   discover its peers (/v1/health/service)     service:read on that name
#                                               (write includes read) and
#                                               node:read: without it the
#                                               health endpoint silently
#                                               drops every entry
#   /v1/status/leader                           nothing
#   with -mesh.tls connect:
#     its leaf certificate, and intention        service:write on its name
#     checks of its callers (authorize)
#     the CA roots                               nothing
#     peers' mesh ports (/v1/health/connect)     as discovery above
#
# Replace "stringsvc" with -service.name if it differs. node_prefix "" can be
# narrowed to the nodes the members run on.
service "stringsvc" {
  policy = "write"
}

node_prefix "" {
  policy = "read"
}

# Only for members that rely on the agent's own address (the agent on
# 127.0.0.1, a client agent on every host, and no -advertise) or on its node
# meta "zone" (no -service.zone). Without it such a member logs "ACL token
# lacks agent:read" once, and advertises the route to the agent instead, or
# has no zone preference.
# agent_prefix "" {
#   policy = "read"
# }
