package e2e

import (
	"bytes"
	"errors"
	"io"
	"os"
	"testing"

	"go.yaml.in/yaml/v3"
)

// TestManifestsAreValidYAML parses every deployment file. The Kubernetes
// manifest is an example that nothing here runs (there is no cluster), so
// valid YAML with a kind and an apiVersion per document is what can be
// checked; the compose and swarm files run in their own tests.
func TestManifestsAreValidYAML(t *testing.T) {
	for _, tc := range []struct {
		file string
		kube bool
	}{
		{file: "../../deploy/kubernetes/stringsvc.yaml", kube: true},
		{file: "../../docker-compose.yml"},
		{file: "../../deploy/compose/secure.yml"},
		{file: "../../deploy/swarm/stack.yml"},
		{file: "../../deploy/prometheus/prometheus.yml"},
		{file: "../../deploy/prometheus/prometheus-secure.yml"},
	} {
		data, err := os.ReadFile(tc.file)
		if err != nil {
			t.Fatal(err)
		}
		dec := yaml.NewDecoder(bytes.NewReader(data))
		docs := 0
		for {
			var doc map[string]interface{}
			err := dec.Decode(&doc)
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				t.Errorf("%s: document %d: %v", tc.file, docs+1, err)
				break
			}
			docs++
			if tc.kube && (doc["kind"] == nil || doc["apiVersion"] == nil) {
				t.Errorf("%s: document %d has no kind or apiVersion", tc.file, docs)
			}
		}
		if docs == 0 {
			t.Errorf("%s: no documents", tc.file)
		}
	}
}
