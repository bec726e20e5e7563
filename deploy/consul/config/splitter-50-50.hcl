# The canary's share: v1 50%, v2 50%.
Kind = "service-splitter"
Name = "stringsvc"
Splits = [
  {
    Weight        = 50
    ServiceSubset = "v1"
  },
  {
    Weight        = 50
    ServiceSubset = "v2"
  },
]
