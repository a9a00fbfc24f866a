"""Quality gates: checks that decide whether a tier's answer stands or the request escalates."""

from tierwise.gates.base import Gate, GateVerdict
from tierwise.gates.programmatic import PROGRAMMATIC_GATES, build_gates

__all__ = ["PROGRAMMATIC_GATES", "Gate", "GateVerdict", "build_gates"]
