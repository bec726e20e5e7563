package main

import (
	"os"
	"testing"
)

// asMemberEnv makes the test binary a member: a benchmark starts it as the
// upstream in a process of its own (see startUpstreamProcess), so that the
// upstream's allocations do not count as the forwarding member's.
const asMemberEnv = "STRINGSVC_TEST_AS_MEMBER"

func TestMain(m *testing.M) {
	if os.Getenv(asMemberEnv) == "1" {
		main()
		return
	}
	os.Exit(m.Run())
}
