package service

import (
	"context"
	"time"

	"github.com/go-kit/log"

	"github.com/kitmesh/stringsvc/internal/clip"
)

// MaxLoggedLen bounds how many bytes of an input or output one log line
// carries, so that a 1 MiB request cannot flood the log.
const MaxLoggedLen = 256

// ContextFields appends to keyvals the key-value pairs that a request's
// context carries for its log line: its trace and span IDs, for instance.
type ContextFields func(ctx context.Context, keyvals []interface{}) []interface{}

// LoggingMiddleware logs every call with its input, output, error and
// duration, as Go kit's stringsvc does, and what fields finds in the
// request's context.
func LoggingMiddleware(logger log.Logger, fields ContextFields) Middleware {
	return func(next StringService) StringService {
		return loggingMiddleware{logger: logger, fields: fields, next: next}
	}
}

type loggingMiddleware struct {
	logger log.Logger
	fields ContextFields
	next   StringService
}

// line starts a log line with the context's fields, in a slice with room
// for the call's own: one allocation for the whole line.
func (mw loggingMiddleware) line(ctx context.Context) []interface{} {
	line := make([]interface{}, 0, 16)
	if mw.fields != nil {
		line = mw.fields(ctx, line)
	}
	return line
}

func (mw loggingMiddleware) Uppercase(ctx context.Context, s string) (output string, err error) {
	defer func(begin time.Time) {
		mw.logger.Log(append(mw.line(ctx),
			"method", "uppercase",
			"input", truncate(s),
			"output", truncate(output),
			"err", errValue(err),
			"took", time.Since(begin),
		)...)
	}(time.Now())
	return mw.next.Uppercase(ctx, s)
}

func (mw loggingMiddleware) Count(ctx context.Context, s string) (n int) {
	defer func(begin time.Time) {
		mw.logger.Log(append(mw.line(ctx),
			"method", "count",
			"input", truncate(s),
			"n", n,
			"took", time.Since(begin),
		)...)
	}(time.Now())
	return mw.next.Count(ctx, s)
}

// errValue is err for a log line, its text cut as an input is: an error
// may carry a peer's bytes.
func errValue(err error) interface{} {
	if err == nil {
		return nil
	}
	return truncate(err.Error())
}

// truncate cuts s to MaxLoggedLen bytes, on a rune boundary, and says how
// much was dropped, so a reader of the log knows the value was longer than
// shown.
func truncate(s string) string { return clip.String(s, MaxLoggedLen) }
