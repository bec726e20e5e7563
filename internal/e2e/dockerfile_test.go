package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/kitmesh/stringsvc/discovery/consultest"
	"github.com/kitmesh/stringsvc/internal/probe"
)

// TestUserImageBuild builds deploy/Dockerfile, the multi-stage build users
// with a registry run, FROM kitmesh/go:local (this machine's own Go
// toolchain, made by deploy/goimage.sh) instead of golang:1.26, runs the
// image and asks it for an answer and its health.
func TestUserImageBuild(t *testing.T) {
	needDocker(t)
	if err := exec.Command("docker", "image", "inspect", "kitmesh/go:local").Run(); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("image kitmesh/go:local is missing: run `make images` (CI must not skip this test)")
		}
		t.Skip("image kitmesh/go:local is missing: run `make images`")
	}
	image := fmt.Sprintf("kitmesh/stringsvc:fromsource-%d", os.Getpid())
	build := exec.Command("docker", "build", "-q", "-f", "deploy/Dockerfile",
		"--build-arg", "GO_IMAGE=kitmesh/go:local", "--build-arg", "VERSION=fromsource", "-t", image, ".")
	build.Dir = "../.."
	began := time.Now()
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("docker build: %v\n%s", err, out)
	}
	t.Logf("deploy/Dockerfile built in %v", time.Since(began).Round(time.Second))
	t.Cleanup(func() { exec.Command("docker", "rmi", "-f", image).Run() })

	port := consultest.FreePort(t)
	out, err := exec.Command("docker", "run", "-d", "--rm", "-p", "127.0.0.1:"+strconv.Itoa(port)+":8080", image, "-consul.addr", "none").CombinedOutput()
	if err != nil {
		t.Fatalf("docker run: %v\n%s", err, out)
	}
	id := strings.TrimSpace(string(out))
	t.Cleanup(func() { exec.Command("docker", "rm", "-f", id).Run() })

	addr := "127.0.0.1:" + strconv.Itoa(port)
	consultest.Eventually(t, 30*time.Second, func() error {
		resp, err := probe.Do("POST", "http://"+addr+"/uppercase", `{"s":"built from source"}`, nil)
		if err != nil {
			return err // docker's proxy accepts before the member listens
		}
		if resp.Status != 200 || resp.Body != `{"v":"BUILT FROM SOURCE"}`+"\n" {
			return fmt.Errorf("uppercase: %d %s", resp.Status, resp.Body)
		}
		return nil
	})
	consultest.Eventually(t, 30*time.Second, func() error {
		out, err := exec.Command("docker", "inspect", "-f", "{{.State.Health.Status}} {{.Config.User}}", id).Output()
		if err != nil {
			return err
		}
		if s := strings.TrimSpace(string(out)); s != "healthy 65532:65532" {
			return fmt.Errorf("container: %s, want healthy as 65532:65532", s)
		}
		return nil
	})
}
