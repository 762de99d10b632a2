"""Flow parameters: what a flow declares, and the rule every backend applies
before it creates a flow run.

The rule is Prefect 1's own (``Flow.run``): every name given must be a
parameter of the flow, and every required parameter must be given. A Prefect
Server checks neither the same way (it accepts unknown names silently and
reports missing ones as a Python set), so the backends check first.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Optional

from .errors import FlowParameterError

# A default longer than this is shortened in messages.
_DEFAULT_TEXT_LIMIT = 40


@dataclass(frozen=True)
class FlowParameter:
    """One parameter a flow declares.

    Attributes:
        name: The parameter's name (the key of the parameters mapping).
        required: Whether a run must give it.
        default: Its default value when not required (None otherwise).
    """

    name: str
    required: bool = False
    default: Any = None

    def describe(self) -> str:
        """``name (required)`` or ``name (default <repr>)``, for messages."""
        if self.required:
            return f"{self.name} (required)"
        text = repr(self.default)
        if len(text) > _DEFAULT_TEXT_LIMIT:
            text = text[: _DEFAULT_TEXT_LIMIT - 3] + "..."
        return f"{self.name} (default {text})"


def check_flow_parameters(
    flow_name: Optional[str],
    declared: Iterable[FlowParameter],
    given: Mapping[str, Any],
    *,
    supplied_elsewhere: Iterable[str] = (),
) -> None:
    """Refuse parameters the flow does not declare and required ones left out.

    Args:
        flow_name: The flow's name, for the message.
        declared: The parameters the flow declares.
        given: The parameters of the run, by name.
        supplied_elsewhere: Names the backend supplies itself (e.g. a Prefect
            Server flow group's default parameters): not missing when left out.

    Raises:
        FlowParameterError: A name is unknown or a required parameter is
            missing; it names them and lists every parameter of the flow.
    """
    parameters = list(declared)
    names = {parameter.name for parameter in parameters}
    supplied = set(given) | set(supplied_elsewhere)
    unknown = [name for name in given if name not in names]
    missing = [p.name for p in parameters if p.required and p.name not in supplied]
    if unknown or missing:
        raise FlowParameterError(flow_name, unknown, missing, parameters)


def missing_parameters(declared: Iterable[FlowParameter], given: Mapping[str, Any]) -> list[str]:
    """Names of the required parameters that ``given`` leaves out, sorted."""
    return sorted(p.name for p in declared if p.required and p.name not in given)


__all__ = ["FlowParameter", "check_flow_parameters", "missing_parameters"]
