# Two subsets by tag: the members of docker-compose.yml are tagged v1, the
# canary profile's v2. What no split or route names goes to v1, and v1's
# requests fail over to v2 when v1 has no healthy member left.
Kind          = "service-resolver"
Name          = "stringsvc"
DefaultSubset = "v1"
Subsets = {
  v1 = {
    Filter = "\"v1\" in Service.Tags"
  }
  v2 = {
    Filter = "\"v2\" in Service.Tags"
  }
}
Failover = {
  v1 = {
    ServiceSubset = "v2"
  }
}
