# The canary's share: v1 90%, v2 10%.
Kind = "service-splitter"
Name = "stringsvc"
Splits = [
  {
    Weight        = 90
    ServiceSubset = "v1"
  },
  {
    Weight        = 10
    ServiceSubset = "v2"
  },
]
