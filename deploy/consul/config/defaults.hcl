# Routes and splits need the service's protocol to be http.
Kind     = "service-defaults"
Name     = "stringsvc"
Protocol = "http"
