package integrations

import (
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"
)

var update = flag.Bool("update", false, "rewrite integrations/argocd/argocd-cm.yaml from the scripts")

const argoCDConfigMap = argoCDDir + "/argocd-cm.yaml"

// indent prefixes every non-empty line of text with n spaces.
func indent(text string, n int) string {
	pad := strings.Repeat(" ", n)
	lines := strings.Split(strings.TrimRight(text, "\n"), "\n")
	for i, line := range lines {
		if line != "" {
			lines[i] = pad + line
		}
	}
	return strings.Join(lines, "\n") + "\n"
}

// configMap is the argocd-cm patch that installs every customization under argocd/:
// resource.customizations.health.<group>_<kind> and .actions.<group>_<kind>.
func configMap(t *testing.T) string {
	t.Helper()
	var b strings.Builder
	b.WriteString(`# Generated from the scripts beside this file by
#   go test ./... -run TestArgoCDConfigMap -update     (in integrations/go)
# Apply with: kubectl -n argocd patch configmap argocd-cm --type merge --patch-file integrations/argocd/argocd-cm.yaml
apiVersion: v1
kind: ConfigMap
metadata:
  name: argocd-cm
  namespace: argocd
data:
`)
	for _, dir := range customizations(t) {
		rel, err := filepath.Rel(argoCDDir, dir)
		if err != nil {
			t.Fatal(err)
		}
		key := strings.Replace(filepath.ToSlash(rel), "/", "_", 1)
		b.WriteString("  resource.customizations.health." + key + ": |\n")
		b.WriteString(indent(readText(t, filepath.Join(dir, "health.lua")), 4))
		b.WriteString("  resource.customizations.actions." + key + ": |\n")
		b.WriteString("    discovery.lua: |\n")
		b.WriteString(indent(readText(t, filepath.Join(dir, "actions", "discovery.lua")), 6))
		b.WriteString("    definitions:\n")
		for _, action := range offeredActions(t, filepath.Join(dir, "actions")) {
			b.WriteString("    - name: " + action + "\n")
			b.WriteString("      action.lua: |\n")
			b.WriteString(indent(readText(t, filepath.Join(dir, "actions", action, "action.lua")), 8))
		}
	}
	return b.String()
}

// The argocd-cm patch users apply carries exactly the scripts the other tests run.
func TestArgoCDConfigMap(t *testing.T) {
	want := configMap(t)
	if *update {
		if err := os.WriteFile(argoCDConfigMap, []byte(want), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	got := readText(t, argoCDConfigMap)
	if got != want {
		t.Fatalf("%s is out of date with the scripts; run `go test ./... -run TestArgoCDConfigMap -update` in integrations/go", argoCDConfigMap)
	}

	// Read back as Argo CD reads it: the data values, the actions value as YAML.
	var cm struct {
		Data map[string]string `json:"data"`
	}
	if err := yaml.Unmarshal([]byte(got), &cm); err != nil {
		t.Fatal(err)
	}
	const key = "modeldeploy.dev_ModelDeployment"
	dir := filepath.Join(argoCDDir, "modeldeploy.dev", "ModelDeployment")
	if cm.Data["resource.customizations.health."+key] != readText(t, filepath.Join(dir, "health.lua")) {
		t.Errorf("the health key does not hold health.lua")
	}
	var actions struct {
		Discovery   string `json:"discovery.lua"`
		Definitions []struct {
			Name   string `json:"name"`
			Action string `json:"action.lua"`
		} `json:"definitions"`
	}
	if err := yaml.UnmarshalStrict([]byte(cm.Data["resource.customizations.actions."+key]), &actions); err != nil {
		t.Fatalf("the actions key is not what Argo CD parses: %v", err)
	}
	if actions.Discovery != readText(t, filepath.Join(dir, "actions", "discovery.lua")) {
		t.Errorf("discovery.lua differs")
	}
	names := []string{}
	for _, d := range actions.Definitions {
		names = append(names, d.Name)
		if d.Action != readText(t, filepath.Join(dir, "actions", d.Name, "action.lua")) {
			t.Errorf("action %s differs", d.Name)
		}
	}
	if got, want := strings.Join(names, ","), "abort,pause,promote,promote-step,resume,retry"; got != want {
		t.Errorf("actions = %s, want %s", got, want)
	}
}
