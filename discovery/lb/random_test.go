package lb

import (
	"fmt"
	"testing"
)

func TestRandomUsesItsSource(t *testing.T) {
	p := testPool(t, nil, &fakeInstance{}, &fakeInstance{}, &fakeInstance{})
	b := NewRandom(p)
	b.intn = sequence(2, 0, 1, 1)
	if have, want := fmt.Sprint(picks(t, b, 4)), "[i2 i0 i1 i1]"; have != want {
		t.Errorf("want %s, have %s", want, have)
	}
}
