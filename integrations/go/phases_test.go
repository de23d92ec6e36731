package integrations

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

const (
	// A directory of real objects, DIR/<phase name>.json, to judge instead of the examples.
	objectsEnv = "MODELDEPLOY_GITOPS_OBJECTS"
	// Where to write the table of verdicts (Markdown), when set.
	tableEnv = "MODELDEPLOY_GITOPS_TABLE"

	fluxKustomization = "../../examples/gitops/flux/modeldeployment-kustomization.yaml"
	healthScript      = argoCDDir + "/modeldeploy.dev/ModelDeployment/health.lua"
)

type phaseCase struct {
	Name          string `json:"name"`
	Phase         string `json:"phase"`
	Example       string `json:"example"`
	Cluster       bool   `json:"cluster"`
	KStatus       string `json:"kstatus"`
	ArgoCD        string `json:"argocd"`
	Flux          string `json:"flux"`
	ArgoCDMessage string `json:"argocdMessage"`
}

type verdicts struct {
	kstatus, kstatusMessage, argocd, argocdMessage, flux, fluxMessage string
}

func judge(t *testing.T, path string) verdicts {
	t.Helper()
	obj := readObject(t, path)
	checks, err := FluxHealthChecks(fluxKustomization)
	if err != nil {
		t.Fatal(err)
	}
	var v verdicts
	if v.kstatus, v.kstatusMessage, err = KStatus(obj); err != nil {
		t.Fatalf("kstatus: %v", err)
	}
	health, err := ArgoCDSandbox{}.Health(obj, readText(t, healthScript))
	if err != nil {
		t.Fatalf("Argo CD health: %v", err)
	}
	v.argocd, v.argocdMessage = health.Status, health.Message
	if v.flux, v.fluxMessage, err = FluxVerdict(checks, obj); err != nil {
		t.Fatalf("Flux: %v", err)
	}
	return v
}

// Each phase is judged by kstatus, Argo CD and Flux as the phase table says; with
// MODELDEPLOY_GITOPS_OBJECTS set, on the real objects the integration test captured.
func TestEveryToolReadsEveryPhase(t *testing.T) {
	var phases []phaseCase
	readYAML(t, "testdata/phases.yaml", &phases)
	dir := os.Getenv(objectsEnv)
	source := "committed examples"
	if dir != "" {
		source = "real objects in " + dir
		checkNoStrayObjects(t, dir, phases)
	}
	table := []string{
		"| phase | kstatus | Argo CD health | Flux verdict | Argo CD message |",
		"|---|---|---|---|---|",
	}
	for _, p := range phases {
		path := p.Example
		if dir != "" {
			if !p.Cluster {
				continue
			}
			path = filepath.Join(dir, p.Name+".json")
		}
		t.Run(p.Name, func(t *testing.T) {
			if _, err := os.Stat(path); err != nil {
				t.Fatalf("no object for phase %q: %v", p.Phase, err)
			}
			v := judge(t, path)
			if v.kstatus != p.KStatus {
				t.Errorf("kstatus = %s (%s), want %s", v.kstatus, v.kstatusMessage, p.KStatus)
			}
			if v.argocd != p.ArgoCD {
				t.Errorf("Argo CD health = %s (%s), want %s", v.argocd, v.argocdMessage, p.ArgoCD)
			}
			if !strings.Contains(v.argocdMessage, p.ArgoCDMessage) {
				t.Errorf("Argo CD message %q lacks %q", v.argocdMessage, p.ArgoCDMessage)
			}
			if v.flux != p.Flux {
				t.Errorf("Flux verdict = %s (%s), want %s", v.flux, v.fluxMessage, p.Flux)
			}
			table = append(table, fmt.Sprintf("| %s | %s | %s | %s | %s |",
				p.Phase, v.kstatus, v.argocd, v.flux, strings.ReplaceAll(v.argocdMessage, "|", "\\|")))
		})
	}
	report := strings.Join(table, "\n") + "\n"
	t.Logf("verdicts on %s:\n%s", source, report)
	if out := os.Getenv(tableEnv); out != "" {
		if err := os.WriteFile(out, []byte(report), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// A captured object the table does not name is a phase nobody checks.
func checkNoStrayObjects(t *testing.T, dir string, phases []phaseCase) {
	t.Helper()
	known := map[string]bool{}
	for _, p := range phases {
		known[p.Name+".json"] = true
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if !known[e.Name()] {
			t.Errorf("%s/%s is no phase of testdata/phases.yaml", dir, e.Name())
		}
	}
}
