# The ACL policy of an edge member: it registers under its own name
# (-service.name stringsvc-edge) and forwards to stringsvc
# (-proxy.service stringsvc), which it may read but never write. Replace
# the names if they differ.
service "stringsvc-edge" {
  policy = "write"
}

service "stringsvc" {
  policy = "read"
}

node_prefix "" {
  policy = "read"
}
