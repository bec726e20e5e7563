package main

import (
	"encoding/json"
	"io"
)

func jsonDecode(r io.Reader, v interface{}) error { return json.NewDecoder(r).Decode(v) }
func jsonEncode(w io.Writer, v interface{}) error { return json.NewEncoder(w).Encode(v) }
