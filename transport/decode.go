package transport

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"unicode/utf8"

	"github.com/kitmesh/stringsvc/transport/endpoints"
)

// wireRequest is the body of both endpoints. A pointer to it lets the decoder
// tell a JSON null apart from an object.
type wireRequest struct {
	S string `json:"s"`
}

func decodeUppercaseRequest(_ context.Context, r *http.Request) (interface{}, error) {
	s, err := decodeBody(r)
	return endpoints.UppercaseRequest{S: s}, err
}

func decodeCountRequest(_ context.Context, r *http.Request) (interface{}, error) {
	s, err := decodeBody(r)
	return endpoints.CountRequest{S: s}, err
}

// decodeBody reads the body and decodes {"s": string} from it.
func decodeBody(r *http.Request) (string, error) {
	raw, err := readBody(r)
	if err != nil {
		return "", err
	}
	return decodeStringRequest(raw)
}

// readBody reads the whole body, already bounded by limitBody, into a
// buffer sized from Content-Length when the client sent one: growing by
// doubling would hold up to twice a large body. A client's claim is
// trusted only up to DefaultMaxBodyBytes, so that a header alone cannot
// make the member allocate more than a real body could.
func readBody(r *http.Request) ([]byte, error) {
	var buf bytes.Buffer
	if n := min(r.ContentLength, DefaultMaxBodyBytes); n > 0 {
		buf.Grow(int(n) + bytes.MinRead)
	}
	if _, err := buf.ReadFrom(r.Body); err != nil {
		return nil, decodeError(err)
	}
	return buf.Bytes(), nil
}

// decodeStringRequest decodes exactly one JSON object {"s": string} and
// explains precisely what is wrong with anything else. It decodes from the
// bytes in place (json.Unmarshal), with no second buffer of the body.
func decodeStringRequest(raw []byte) (string, error) {
	if s, ok := plainObject(raw, "s"); ok {
		return s, nil
	}
	if len(bytes.TrimSpace(raw)) == 0 {
		return "", decodeError(io.EOF)
	}
	if !utf8.Valid(raw) {
		// JSON is UTF-8 (RFC 8259, section 8.1). encoding/json would
		// replace each bad byte with U+FFFD, three bytes, and a forward of
		// the result could outgrow a peer's body limit.
		return "", badRequest("request body is not valid UTF-8")
	}
	var req *wireRequest
	if err := json.Unmarshal(raw, &req); err != nil {
		var syntaxErr *json.SyntaxError
		switch {
		case errors.As(err, &syntaxErr) && strings.HasSuffix(syntaxErr.Error(), "after top-level value"):
			// Exactly one value: anything after it is garbage a client did
			// not mean to send, and silently ignoring it would hide their
			// bug.
			return "", badRequest("unexpected data after the JSON object")
		case errors.As(err, &syntaxErr) && syntaxErr.Error() == "unexpected end of JSON input":
			return "", decodeError(io.ErrUnexpectedEOF)
		}
		return "", decodeError(err)
	}
	if req == nil {
		return "", badRequest("request body must be a JSON object, not null")
	}
	return req.S, nil
}

func decodeError(err error) error {
	var (
		syntaxErr *json.SyntaxError
		typeErr   *json.UnmarshalTypeError
		mbe       *http.MaxBytesError
	)
	switch {
	case errors.As(err, &mbe):
		return &RequestError{
			Status: http.StatusRequestEntityTooLarge,
			Msg:    fmt.Sprintf("request body is larger than %d bytes", mbe.Limit),
		}
	case errors.Is(err, io.EOF):
		return badRequest(`request body is empty; want a JSON object like {"s":"hello"}`)
	case errors.Is(err, io.ErrUnexpectedEOF):
		return badRequest("malformed JSON: unexpected end of input")
	case errors.As(err, &syntaxErr):
		return badRequest(fmt.Sprintf("malformed JSON at byte %d: %v", syntaxErr.Offset, syntaxErr))
	case errors.As(err, &typeErr) && typeErr.Field == "":
		return badRequest(fmt.Sprintf("request body must be a JSON object, not %s", typeErr.Value))
	case errors.As(err, &typeErr):
		return badRequest(fmt.Sprintf("field %q must be a string, not %s", typeErr.Field, typeErr.Value))
	default:
		return badRequest(fmt.Sprintf("malformed request: %v", err))
	}
}
