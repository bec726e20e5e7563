# Nobody calls the edge: it is where clients enter the mesh, and its mesh
# port answers no one. Under default allow (the dev agent of
# docker-compose.yml) this also keeps Consul's topology from drawing the
# edge as an upstream of every Connect-native service, which Consul infers
# from what intentions allow.
Kind = "service-intentions"
Name = "stringsvc-edge"
Sources = [
  {
    Name   = "*"
    Action = "deny"
  },
]
