"""The application layer: the scheduler port and the service that uses it.

Imports `lume_scheduling.domain` only.
"""

from .ports import (
    Backend,
    BackendCapabilities,
    FlowRunRequest,
    Timeout,
    check_parameters,
    resolve_run_config,
)
from .service import SchedulingService

__all__ = [
    "Backend",
    "BackendCapabilities",
    "FlowRunRequest",
    "SchedulingService",
    "Timeout",
    "check_parameters",
    "resolve_run_config",
]
