"""The data plane: one typed invocation and the one path it takes (see ``plane.py``)."""

from coldbrew.core.outcome import ColdStart, Outcome
from coldbrew.dataplane.plane import Admitted, DataPlane
from coldbrew.dataplane.request import InvocationRequest

__all__ = ["Admitted", "ColdStart", "DataPlane", "InvocationRequest", "Outcome"]
