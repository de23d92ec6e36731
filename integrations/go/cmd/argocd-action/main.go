// Command argocd-action runs a resource action of integrations/argocd on an object read
// from stdin (JSON, as kubectl get -o json prints it), in Argo CD's sandbox, and prints
// the JSON merge patch Argo CD would send for it: the difference between the live object
// and the one the action returned.
//
//	kubectl get md fraud -o json | argocd-action -script .../actions/pause/action.lua
package main

import (
	"flag"
	"fmt"
	"io"
	"os"

	jsonpatch "gopkg.in/evanphx/json-patch.v4"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"modeldeploy.dev/integrations"
)

func main() {
	script := flag.String("script", "", "path of the action.lua to run")
	flag.Parse()
	if err := run(*script, os.Stdin, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "argocd-action:", err)
		os.Exit(1)
	}
}

func run(scriptPath string, in io.Reader, out io.Writer) error {
	if scriptPath == "" {
		return fmt.Errorf("-script is required: the action.lua to run")
	}
	script, err := os.ReadFile(scriptPath)
	if err != nil {
		return err
	}
	live, err := io.ReadAll(in)
	if err != nil {
		return err
	}
	obj := &unstructured.Unstructured{}
	if err := obj.UnmarshalJSON(live); err != nil {
		return fmt.Errorf("stdin is not an object: %w", err)
	}
	changed, err := integrations.ArgoCDSandbox{}.Action(obj, string(script))
	if err != nil {
		return err
	}
	after, err := changed.MarshalJSON()
	if err != nil {
		return err
	}
	before, err := obj.MarshalJSON()
	if err != nil {
		return err
	}
	patch, err := jsonpatch.CreateMergePatch(before, after)
	if err != nil {
		return err
	}
	_, err = fmt.Fprintln(out, string(patch))
	return err
}
