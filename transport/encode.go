package transport

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"

	"github.com/kitmesh/stringsvc/service"
	"github.com/kitmesh/stringsvc/transport/endpoints"
)

func encodeUppercaseResponse(ctx context.Context, w http.ResponseWriter, response interface{}) error {
	resp := response.(endpoints.UppercaseResponse)
	if resp.Err != nil {
		encodeError(ctx, resp.Err, w)
		return nil
	}
	if ok, err := writeV(w, resp.V); ok {
		return err
	}
	return writeJSON(w, http.StatusOK, struct {
		V string `json:"v"`
	}{resp.V})
}

func encodeCountResponse(_ context.Context, w http.ResponseWriter, response interface{}) error {
	return writeJSON(w, http.StatusOK, struct {
		V int `json:"v"`
	}{response.(endpoints.CountResponse).V})
}

// encodeError writes err with its status. ErrEmpty keeps the shape of Go
// kit's stringsvc tutorial, {"v":"","err":"empty string"}, so stringsvc3
// clients still decode it.
//
// Go kit calls it also when writing a response failed, after the status
// was sent; then there is nothing left to say, and it writes nothing. A
// RequestError that carries an upstream's own answer is passed on as it
// came.
func encodeError(_ context.Context, err error, w http.ResponseWriter) {
	if t, ok := w.(*responseTracker); ok && t.wroteHeader {
		return
	}
	var re *RequestError
	if errors.As(err, &re) && re.Body != nil {
		w.Header().Set("Content-Type", "application/json; charset=utf-8")
		w.WriteHeader(re.Status)
		w.Write(re.Body)
		return
	}
	code := err2code(err)
	if errors.Is(err, service.ErrEmpty) {
		writeJSON(w, code, struct {
			V   string `json:"v"`
			Err string `json:"err"`
		}{"", err.Error()})
		return
	}
	writeError(w, code, err.Error())
}

func writeError(w http.ResponseWriter, code int, msg string) {
	writeJSON(w, code, struct {
		Error string `json:"error"`
	}{msg})
}

// writeJSON writes v without HTML escaping: the answers are JSON for
// programs, and escaping turns one byte of "<" into six.
func writeJSON(w http.ResponseWriter, code int, v interface{}) error {
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(code)
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	return enc.Encode(v)
}
