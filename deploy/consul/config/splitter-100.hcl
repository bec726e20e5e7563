# The canary takes everything: v2 100%. Once v1's members run the new
# version too, delete the splitter (and tag them as the resolver expects).
Kind = "service-splitter"
Name = "stringsvc"
Splits = [
  {
    Weight        = 100
    ServiceSubset = "v2"
  },
]
