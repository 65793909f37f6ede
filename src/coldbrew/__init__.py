"""coldbrew: serverless ML inference you run yourself."""

__version__ = "0.1.0"

from coldbrew.runtime.forksafety import after_fork  # the handler-facing hook

__all__ = ["__version__", "after_fork"]
