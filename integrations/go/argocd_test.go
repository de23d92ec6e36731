package integrations

import (
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"sort"
	"strings"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/yaml"
)

// The resource customizations, laid out as in Argo CD's resource_customizations/.
const argoCDDir = "../argocd"

// Both sandboxes a script can get: argocd-cm's default, and useOpenLibs set to true.
var sandboxes = map[string]ArgoCDSandbox{
	"argocd-cm":   {OpenLibs: false},
	"useOpenLibs": {OpenLibs: true},
}

// customizations lists the <group>/<kind> folders that hold a health.lua.
func customizations(t *testing.T) []string {
	t.Helper()
	var dirs []string
	err := filepath.WalkDir(argoCDDir, func(path string, entry os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if entry.Name() == "health.lua" {
			dirs = append(dirs, filepath.Dir(path))
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(dirs) == 0 {
		t.Fatalf("no health.lua under %s", argoCDDir)
	}
	return dirs
}

func readText(t *testing.T, path string) string {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(data)
}

func readYAML(t *testing.T, path string, into any) {
	t.Helper()
	if err := yaml.UnmarshalStrict([]byte(readText(t, path)), into); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
}

func readObject(t *testing.T, path string) *unstructured.Unstructured {
	t.Helper()
	obj, err := ReadObject(path)
	if err != nil {
		t.Fatal(err)
	}
	return obj
}

// health_test.yaml, as Argo CD's TestLuaHealthScript reads it.
type healthTests struct {
	Tests []struct {
		InputPath    string `json:"inputPath"`
		HealthStatus Health `json:"healthStatus"`
	} `json:"tests"`
}

func TestArgoCDHealthChecks(t *testing.T) {
	for _, dir := range customizations(t) {
		script := readText(t, filepath.Join(dir, "health.lua"))
		var cases healthTests
		readYAML(t, filepath.Join(dir, "health_test.yaml"), &cases)
		tested := map[string]bool{}
		for _, c := range cases.Tests {
			tested[filepath.Clean(c.InputPath)] = true
			obj := readObject(t, filepath.Join(dir, c.InputPath))
			for name, sandbox := range sandboxes {
				t.Run(filepath.Join(name, c.InputPath), func(t *testing.T) {
					got, err := sandbox.Health(obj, script)
					if err != nil {
						t.Fatal(err)
					}
					if got != c.HealthStatus {
						t.Errorf("health of %s\n got: %+v\nwant: %+v", c.InputPath, got, c.HealthStatus)
					}
				})
			}
		}
		inputs, _ := filepath.Glob(filepath.Join(dir, "testdata", "*.yaml"))
		for _, input := range inputs {
			rel, _ := filepath.Rel(dir, input)
			if !tested[rel] {
				t.Errorf("%s has no test in %s/health_test.yaml", rel, dir)
			}
		}
	}
}

// action_test.yaml, as Argo CD's TestLuaResourceActionsScript reads it.
type actionTests struct {
	DiscoveryTests []struct {
		InputPath string           `json:"inputPath"`
		Result    []ResourceAction `json:"result"`
	} `json:"discoveryTests"`
	ActionTests []struct {
		Action             string `json:"action"`
		InputPath          string `json:"inputPath"`
		ExpectedOutputPath string `json:"expectedOutputPath"`
	} `json:"actionTests"`
}

// nowPlaceholder in an expected output stands for the time the action ran.
const nowPlaceholder = "<now>"

func TestArgoCDActions(t *testing.T) {
	for _, dir := range customizations(t) {
		actionsDir := filepath.Join(dir, "actions")
		var cases actionTests
		readYAML(t, filepath.Join(actionsDir, "action_test.yaml"), &cases)
		discovery := readText(t, filepath.Join(actionsDir, "discovery.lua"))
		for _, c := range cases.DiscoveryTests {
			obj := readObject(t, filepath.Join(actionsDir, c.InputPath))
			for name, sandbox := range sandboxes {
				t.Run(filepath.Join(name, "discovery", c.InputPath), func(t *testing.T) {
					got, err := sandbox.Discovery(obj, discovery)
					if err != nil {
						t.Fatal(err)
					}
					if !reflect.DeepEqual(byName(got), byName(c.Result)) {
						t.Errorf("actions offered on %s\n got: %+v\nwant: %+v", c.InputPath, byName(got), byName(c.Result))
					}
				})
			}
		}
		tested := map[string]bool{}
		for _, c := range cases.ActionTests {
			tested[c.Action] = true
			script := readText(t, filepath.Join(actionsDir, c.Action, "action.lua"))
			obj := readObject(t, filepath.Join(actionsDir, c.InputPath))
			want := asJSONMap(t, readObject(t, filepath.Join(actionsDir, c.ExpectedOutputPath)))
			for name, sandbox := range sandboxes {
				t.Run(filepath.Join(name, c.Action, c.InputPath), func(t *testing.T) {
					before := time.Now().UTC().Truncate(time.Second)
					changed, err := sandbox.Action(obj.DeepCopy(), script)
					after := time.Now().UTC()
					if err != nil {
						t.Fatal(err)
					}
					got := asJSONMap(t, changed)
					stampNow(t, got, want, before, after)
					if !reflect.DeepEqual(got, want) {
						t.Errorf("%s on %s\n got: %s\nwant: %s", c.Action, c.InputPath, toJSON(got), toJSON(want))
					}
				})
			}
		}
		for _, action := range offeredActions(t, actionsDir) {
			if !tested[action] {
				t.Errorf("action %s has no test in %s/action_test.yaml", action, actionsDir)
			}
		}
	}
}

func byName(actions []ResourceAction) map[string]ResourceAction {
	m := make(map[string]ResourceAction, len(actions))
	for _, a := range actions {
		m[a.Name] = a
	}
	return m
}

func offeredActions(t *testing.T, actionsDir string) []string {
	t.Helper()
	scripts, _ := filepath.Glob(filepath.Join(actionsDir, "*", "action.lua"))
	var names []string
	for _, s := range scripts {
		names = append(names, filepath.Base(filepath.Dir(s)))
	}
	sort.Strings(names)
	return names
}

func asJSONMap(t *testing.T, obj *unstructured.Unstructured) map[string]any {
	t.Helper()
	data, err := obj.MarshalJSON()
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(data, &m); err != nil {
		t.Fatal(err)
	}
	return m
}

func toJSON(v any) string {
	data, _ := json.MarshalIndent(v, "", "  ")
	return string(data)
}

// stampNow checks that every annotation `want` expects to be <now> holds a UTC RFC 3339
// time within [before, after], then writes the placeholder into `got` for comparison.
func stampNow(t *testing.T, got, want map[string]any, before, after time.Time) {
	t.Helper()
	wantAnnotations, _, _ := unstructured.NestedStringMap(want, "metadata", "annotations")
	gotAnnotations, _, _ := unstructured.NestedStringMap(got, "metadata", "annotations")
	for key, value := range wantAnnotations {
		if value != nowPlaceholder {
			continue
		}
		stamp, ok := gotAnnotations[key]
		if !ok {
			continue // the comparison reports it missing
		}
		at, err := time.Parse(time.RFC3339, stamp)
		switch {
		case err != nil || !strings.HasSuffix(stamp, "Z"):
			t.Errorf("annotation %s = %q, want a UTC RFC 3339 time", key, stamp)
		case at.Before(before) || at.After(after):
			t.Errorf("annotation %s = %s, want the time the action ran (%s..%s)", key, stamp, before, after)
		}
		gotAnnotations[key] = nowPlaceholder
	}
	if gotAnnotations != nil {
		if err := unstructured.SetNestedStringMap(got, gotAnnotations, "metadata", "annotations"); err != nil {
			t.Fatal(err)
		}
	}
}

// The sandbox is only worth its tests if it refuses what Argo CD refuses.
func TestArgoCDSandboxIsArgoCDs(t *testing.T) {
	obj := &unstructured.Unstructured{Object: map[string]any{"metadata": map[string]any{"generation": int64(3)}}}
	strict := ArgoCDSandbox{}
	cases := []struct {
		what, script, wantErr string
	}{
		{"no string library", `return {status = string.format("%d", 1)}`, "non-table object(nil) with key 'format'"},
		{"no global os without useOpenLibs", `return {status = os.date()}`, "non-table object(nil) with key 'date'"},
		{"no os.exit through require", `local os = require("os"); os.exit(1)`, "attempt to call a non-function object"},
		{"no io library", `io.write("x")`, "non-table object(nil) with key 'write'"},
		{"cut off at the timeout", `while true do end`, "context deadline exceeded"},
	}
	for _, c := range cases {
		t.Run(c.what, func(t *testing.T) {
			_, err := strict.Health(obj, c.script)
			if err == nil || !strings.Contains(err.Error(), c.wantErr) {
				t.Errorf("error = %v, want one mentioning %q", err, c.wantErr)
			}
		})
	}
	got, err := strict.Health(obj, `local os = require("os")
		return {status = "Healthy", message = os.date("!%Y") .. " " .. tostring(obj.metadata.generation) .. " " .. table.concat({"a", "b"}, ",")}`)
	if err != nil {
		t.Fatal(err)
	}
	if want := time.Now().UTC().Format("2006") + " 3 a,b"; got.Message != want {
		t.Errorf("message = %q, want %q (require(\"os\"), numbers and table.concat work)", got.Message, want)
	}
	if got, _ := strict.Health(obj, `return {status = "Fine"}`); got.Status != "Unknown" {
		t.Errorf("an invalid health status became %q, want Unknown", got.Status)
	}
}
