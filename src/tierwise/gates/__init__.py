"""Quality gates: checks that decide whether a tier's answer stands or the request escalates."""

from __future__ import annotations

from tierwise.config import GateSpec
from tierwise.gates.base import CallModel, Gate, GateVerdict
from tierwise.gates.programmatic import PROGRAMMATIC_GATES, programmatic_gate

__all__ = ["PROGRAMMATIC_GATES", "CallModel", "Gate", "GateVerdict", "build_gates"]


def build_gates(specs: list[GateSpec], *, call_model: CallModel | None = None) -> list[Gate]:
    """The gates of a cascade, in order. ``call_model`` serves the gates that ask a model (critique)."""
    gates: list[Gate] = []
    for spec in specs:
        if spec.type == "critique":
            from tierwise.gates.critique import CritiqueGate

            if call_model is None:
                raise ValueError("a critique gate needs a way to call its model")
            gates.append(CritiqueGate(spec, call_model))
        elif spec.type == "grounding":
            from tierwise.gates.grounding import GroundingGate

            gates.append(GroundingGate(spec))
        elif spec.type == "learned":
            from tierwise.gates.learned import LearnedGate

            gates.append(LearnedGate.from_spec(spec))
        else:
            gates.append(programmatic_gate(spec))
    return gates
