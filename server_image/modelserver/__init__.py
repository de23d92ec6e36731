"""modelserver: the inference server that every ModelDeployment pod runs."""

__version__ = "0.1.0"
