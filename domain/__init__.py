"""The pure domain of lume-scheduling: run configs, flow run results and errors.

Imports only the standard library, pydantic (v1) and PyYAML; never prefect.
"""

from .errors import (
    BackendUnavailableError,
    EmptyResultError,
    FlowFailedError,
    FlowArchivedError,
    FlowNotFoundError,
    FlowParameterError,
    FlowRunCancelledError,
    FlowRunNotFoundError,
    FlowRunTimeoutError,
    LocalBackendError,
    SchedulingError,
    TaskNotCompletedError,
    TaskNotInFlowError,
)
from .parameters import FlowParameter, check_flow_parameters
from .quantity import QuantityError, is_quantity, parse_quantity
from .results import (
    FlowRunResult,
    FlowRunState,
    TaskRun,
    TaskRunState,
    as_timedelta,
    select_task_result,
)
from .run_configs import (
    RUN_CONFIG_KINDS,
    RUN_CONFIG_TYPES,
    DaskRunConfig,
    DockerRunConfig,
    KubernetesRunConfig,
    LocalRunConfig,
    RunConfig,
    parse_run_config,
)

__all__ = [
    "BackendUnavailableError",
    "DaskRunConfig",
    "DockerRunConfig",
    "EmptyResultError",
    "FlowFailedError",
    "FlowArchivedError",
    "FlowNotFoundError",
    "FlowParameter",
    "FlowParameterError",
    "FlowRunCancelledError",
    "FlowRunNotFoundError",
    "FlowRunResult",
    "FlowRunState",
    "FlowRunTimeoutError",
    "KubernetesRunConfig",
    "LocalBackendError",
    "LocalRunConfig",
    "QuantityError",
    "RUN_CONFIG_KINDS",
    "RUN_CONFIG_TYPES",
    "RunConfig",
    "SchedulingError",
    "TaskNotCompletedError",
    "TaskNotInFlowError",
    "TaskRun",
    "TaskRunState",
    "as_timedelta",
    "check_flow_parameters",
    "is_quantity",
    "parse_quantity",
    "parse_run_config",
    "select_task_result",
]
