package e2e

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/kitmesh/stringsvc/internal/poll"
)

// consulUIShows opens the Consul UI's instance list of stringsvc in
// headless Chromium and waits, with a deadline, until the rendered page
// lists every id with its service checks passing.
func consulUIShows(t *testing.T, consulAddr, name string, ids []string) {
	t.Helper()
	consulUIPage(t, consulAddr, "/ui/dc1/services/stringsvc/instances", name, func(text string) error {
		for _, id := range ids {
			if !strings.Contains(text, id) {
				return fmt.Errorf("the page does not list %s yet", id)
			}
		}
		if n := strings.Count(text, "All service checks passing"); n != len(ids) {
			return fmt.Errorf("%d instances shown passing, want %d", n, len(ids))
		}
		return nil
	})
	t.Logf("the Consul UI lists %d instances of stringsvc, each with \"All service checks passing\": %s", len(ids), strings.Join(ids, ", "))
}

// consulUIPage opens a page of the Consul UI in headless Chromium and
// waits, with a deadline, until its rendered text satisfies shows. The UI
// loads its data by long polling, so the page is read again until it
// does. A screenshot goes to bin/artifacts/<name>.png.
func consulUIPage(t *testing.T, consulAddr, path, name string, shows func(text string) error) {
	t.Helper()
	browser, err := exec.LookPath("chromium")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("no chromium: install Debian's chromium package (CI must not skip the browser check)")
		}
		t.Skip("no chromium")
	}
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(browser),
		chromedp.NoSandbox, // root in a container or CI
		chromedp.WindowSize(1280, 900),
	)
	actx, cancel := chromedp.NewExecAllocator(context.Background(), opts...)
	defer cancel()
	ctx, cancel := chromedp.NewContext(actx)
	defer cancel()
	ctx, cancel = context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()

	url := "http://" + consulAddr + path
	if _, err := chromedp.Run(ctx, chromedp.Navigate(url)); err != nil {
		t.Fatalf("open %s: %v", url, err)
	}
	var text string
	err = poll.Until(60*time.Second, 250*time.Millisecond, func() error {
		var err error
		if text, err = chromedp.Run(ctx, chromedp.Evaluate[string]("document.body.innerText")); err != nil {
			return err
		}
		return shows(text)
	})
	if png, shotErr := chromedp.Run(ctx, chromedp.FullScreenshot(100)); shotErr == nil {
		dir, _ := filepath.Abs("../../bin/artifacts")
		os.MkdirAll(dir, 0o755)
		file := filepath.Join(dir, name+".png")
		if os.WriteFile(file, png, 0o644) == nil {
			t.Logf("screenshot of the Consul UI: %s", file)
		}
	}
	if err != nil {
		t.Fatalf("Consul UI at %s: %v; the page read:\n%s", url, err, text)
	}
}
