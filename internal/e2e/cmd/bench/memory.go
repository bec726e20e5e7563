package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"time"

	"github.com/kitmesh/stringsvc/internal/load"
	"github.com/kitmesh/stringsvc/internal/probe"
)

// memory measures the peak resident memory (VmHWM) of members under
// memConcurrency concurrent requests whose body is 1 MiB of "<", the body
// that HTML escaping used to grow sixfold: a standalone member, and an
// entry member forwarding to a peer through -proxy (no Consul needed).
func (b *bench) memory(stdout io.Writer) error {
	const memConcurrency = 64
	body := []byte(`{"s":"` + strings.Repeat("<", 1<<20-8) + `"}`) // just under -http.max-body
	alone, aloneCmd, err := b.member("alone", "none")
	if err != nil {
		return err
	}
	peer, peerCmd, err := b.member("peer", "none")
	if err != nil {
		return err
	}
	entry, entryCmd, err := b.member("entry", "none", "-proxy", peer)
	if err != nil {
		return err
	}
	for _, a := range []string{alone, peer, entry} {
		if err := waitFor(30*time.Second, "member at "+a, func() bool {
			_, err := probe.Do(http.MethodGet, "http://"+a+"/health", "", nil)
			return err == nil
		}); err != nil {
			return err
		}
	}
	fmt.Fprintf(stdout, "\n## Memory under %d concurrent 1 MiB bodies of \"<\"\n\n", memConcurrency)
	fmt.Fprintf(stdout, "Peak resident memory (VmHWM) of each process after %v of load; `-http.max-inflight` at its default.\n\n", b.cfg.duration*5)
	fmt.Fprintf(stdout, "| target | requests | ok | 503 | other errors | process | VmHWM before | VmHWM after |\n|---|---|---|---|---|---|---|---|\n")
	for _, tc := range []struct {
		name, addr string
		cmds       map[string]*exec.Cmd
	}{
		{"standalone", alone, map[string]*exec.Cmd{"alone": aloneCmd}},
		{"entry -> peer", entry, map[string]*exec.Cmd{"entry": entryCmd, "peer": peerCmd}},
	} {
		before := map[string]string{}
		for name, cmd := range tc.cmds {
			before[name] = vmHWM(cmd)
		}
		res := load.Run(context.Background(), load.Options{
			Targets:     []string{"http://" + tc.addr + "/uppercase"},
			Body:        body,
			Concurrency: memConcurrency,
			Requests:    1 << 20,
			Duration:    b.cfg.duration * 5,
			Check: func(code int, got []byte) error {
				if code != 200 || len(got) < 1<<20 {
					return fmt.Errorf("status %d", code)
				}
				return nil
			},
		})
		busy := res.Errors["status 503"]
		for name, cmd := range tc.cmds {
			fmt.Fprintf(stdout, "| %s | %d | %d | %d | %d | %s | %s | %s |\n", tc.name, res.Sent, res.Succeeded, busy, res.Failed-busy, name, before[name], vmHWM(cmd))
		}
	}
	return nil
}

// vmHWM returns the peak resident memory of cmd's process, e.g. "42 MiB".
func vmHWM(cmd *exec.Cmd) string {
	status, err := os.ReadFile("/proc/" + strconv.Itoa(cmd.Process.Pid) + "/status")
	if err != nil {
		return "?"
	}
	for _, line := range strings.Split(string(status), "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == "VmHWM:" {
			kb, _ := strconv.Atoi(f[1])
			return fmt.Sprintf("%d MiB", kb>>10)
		}
	}
	return "?"
}
