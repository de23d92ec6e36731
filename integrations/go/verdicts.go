package integrations

import (
	"context"
	"fmt"
	"os"

	"github.com/fluxcd/pkg/apis/kustomize"
	fluxcel "github.com/fluxcd/pkg/runtime/cel"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/cli-utils/pkg/kstatus/status"
	"sigs.k8s.io/yaml"
)

// KStatus is what kstatus (Flux's default health check, cli-utils, kapply) says.
func KStatus(obj *unstructured.Unstructured) (string, string, error) {
	result, err := status.Compute(obj)
	if err != nil {
		return "", "", err
	}
	return result.Status.String(), result.Message, nil
}

// FluxHealthChecks reads spec.healthCheckExprs from a Flux Kustomization manifest.
func FluxHealthChecks(path string) ([]kustomize.CustomHealthCheck, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var manifest struct {
		Kind string `json:"kind"`
		Spec struct {
			HealthCheckExprs []kustomize.CustomHealthCheck `json:"healthCheckExprs"`
		} `json:"spec"`
	}
	if err := yaml.Unmarshal(data, &manifest); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if manifest.Kind != "Kustomization" || len(manifest.Spec.HealthCheckExprs) == 0 {
		return nil, fmt.Errorf("%s: no Kustomization with spec.healthCheckExprs", path)
	}
	return manifest.Spec.HealthCheckExprs, nil
}

// FluxVerdict is what kustomize-controller's health check says of obj: the status reader
// it builds from spec.healthCheckExprs (fluxcd/pkg/runtime/cel.NewStatusReader), asked
// for the object as its poller asks. An expression that cannot be evaluated (no status
// yet) gives Unknown, on which Flux keeps waiting.
func FluxVerdict(checks []kustomize.CustomHealthCheck, obj *unstructured.Unstructured) (string, string, error) {
	newReader, err := fluxcel.NewStatusReader(checks)
	if err != nil {
		return "", "", err
	}
	reader := newReader(nil)
	if !reader.Supports(obj.GroupVersionKind().GroupKind()) {
		return "", "", fmt.Errorf("no health check expression for %s", obj.GroupVersionKind())
	}
	result, err := reader.ReadStatusForObject(context.Background(), nil, obj)
	if err != nil {
		return "", "", err
	}
	message := result.Message
	if result.Error != nil {
		message = result.Error.Error()
	}
	return result.Status.String(), message, nil
}
