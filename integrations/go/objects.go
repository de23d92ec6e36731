// Package integrations checks modeldeploy's GitOps integrations (docs/gitops.md) with
// the code the tools themselves run: kstatus (sigs.k8s.io/cli-utils), Flux's CEL health
// checks (github.com/fluxcd/pkg/runtime/cel) and Argo CD's Lua sandbox.
package integrations

import (
	"fmt"
	"os"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/yaml"
)

// ReadObject reads one object from a YAML or JSON file. Its integers become int64, as in
// objects read from the API server; kstatus and Flux read generations only as int64.
func ReadObject(path string) (*unstructured.Unstructured, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	asJSON, err := yaml.YAMLToJSON(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	obj := &unstructured.Unstructured{}
	if err := obj.UnmarshalJSON(asJSON); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return obj, nil
}
