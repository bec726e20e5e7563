package lb

import (
	"fmt"
	"testing"
)

func TestRoundRobinTakesTurns(t *testing.T) {
	p := testPool(t, nil, &fakeInstance{}, &fakeInstance{}, &fakeInstance{})
	if have, want := fmt.Sprint(picks(t, NewRoundRobin(p), 6)), "[i0 i1 i2 i0 i1 i2]"; have != want {
		t.Errorf("want %s, have %s", want, have)
	}
}
