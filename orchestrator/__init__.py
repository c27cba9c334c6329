"""orchestrator: PyTorch models from a laptop to a Ray cluster and out to an HTTP endpoint."""

__version__ = "0.1.0"
