"""The one error of `modelserver validate`: what went wrong, and whose part it was."""

from typing import Literal

ErrorKind = Literal["config", "dataset", "endpoint", "model", "metric"]
"""config: the command's own arguments; dataset: fetching, verifying or reading the hold-out
set; endpoint: reaching a model server or understanding its answers; model: a model that
cannot take the dataset's rows (feature count, values it refuses); metric: a metric that
the model's task or outputs cannot produce."""


class ValidateError(Exception):
    """The check cannot produce a result; the message is the one line shown to the user."""

    def __init__(self, kind: ErrorKind, message: str) -> None:
        super().__init__(message)
        self.kind: ErrorKind = kind
        self.message = message
