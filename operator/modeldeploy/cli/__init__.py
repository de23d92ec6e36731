"""`kubectl modeldeploy`: watch and steer ModelDeployment rollouts from a terminal.

A kubectl plugin (the `kubectl-modeldeploy` console script, found by kubectl on PATH). It
talks only to the API server: it reads a ModelDeployment, its Deployments, pods and
Events, and sets the operator's manual-request annotations. It imports only the
kubernetes client and rich (the `cli` extra), never the operator's runtime, and the
operator never imports it.

Pure logic lives in `text` (formatting), `view` (what `get`, `history` and `list` show)
and `decide` (which request a verb makes or why it refuses, and how a rollout ended);
`cluster` is the API shell, `render` turns views into rich renderables, and `main` parses
the command line.
"""
