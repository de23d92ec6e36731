"""The operator's API names, spelled out so the plugin needs none of its imports.

`tests/unit/test_cli_names.py` checks each against the operator's own constant."""

GROUP = "modeldeploy.dev"
VERSION = "v1alpha1"
PLURAL = "modeldeployments"
KIND = "ModelDeployment"

MD_LABEL = "modeldeploy.dev/modeldeployment"
TRACK_LABEL = "modeldeploy.dev/track"
REVISION_LABEL = "modeldeploy.dev/revision"
VERSION_LABEL = "app.kubernetes.io/version"

PROMOTE_ANNOTATION = "modeldeploy.dev/promote"
PROMOTE_STEP_ANNOTATION = "modeldeploy.dev/promote-step"
ABORT_ANNOTATION = "modeldeploy.dev/abort"
RETRY_ANNOTATION = "modeldeploy.dev/retry"
PAUSE_ANNOTATION = "modeldeploy.dev/pause"
RESUME_ANNOTATION = "modeldeploy.dev/resume"
MANUAL_ANNOTATIONS = (
    ABORT_ANNOTATION,
    PROMOTE_ANNOTATION,
    PROMOTE_STEP_ANNOTATION,
    RETRY_ANNOTATION,
    PAUSE_ANNOTATION,
    RESUME_ANNOTATION,
)

# Check names in status.drift.checks (monitoring), read to pair values with their bounds.
FEATURE_DRIFT_CHECK = "feature-drift"
REFERENCE_SUFFIX = "-drop-vs-reference"
