"""`ServerBackend`, `DockerBackend`, `KubernetesBackend`: flows run by the Docker or
Kubernetes agents of a Prefect 1 Server.

Every backend talks to its server through its own `ServerClient`; prefect's global
config and context are never changed and nothing is written under the user's home,
so two backends pointed at two servers work side by side. Prefect and requests
errors are translated into `lume_scheduling.domain` errors at this boundary.
"""

from __future__ import annotations

import ast
import copy
import logging
import re
import sys
import threading
import time
from collections import OrderedDict
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, ClassVar, Collection, Dict, Iterator, List, Mapping, Optional, Sequence, Set, Tuple, Type, Union

import pendulum
import prefect
from prefect.engine import state as prefect_state
from prefect.exceptions import AuthorizationError, ClientError
from prefect.storage import Module

from lume_scheduling.application.ports import Backend, BackendCapabilities, DeclaredParameters, FlowRunRequest, Timeout
from lume_scheduling.domain import (
    BackendUnavailableError,
    DockerRunConfig,
    FlowArchivedError,
    FlowParameter,
    FlowParameterError,
    FlowNotFoundError,
    FlowRunNotFoundError,
    FlowRunResult,
    FlowRunState,
    KubernetesRunConfig,
    RunConfig,
    SchedulingError,
    TaskRun,
    TaskRunState,
)
from lume_scheduling.domain.image import image_reference_problem
from lume_scheduling.domain.secrets import mask_text, secret_values

from ..prefect_flows import flow_run_state as local_flow_run_state
from ..prefect_flows import flow_parameters, is_prefect_flow, serialized_flow_parameters, task_run_state
from . import _answers as answers
from ._answers import MalformedAnswer
from .client import ServerClient, UnknownProjectError, graphql_message
from .config import PrefectConfig, PrefectServerConfig, server_config_from
from .run_configs import describe, to_prefect_run_config

logger = logging.getLogger("lume_scheduling.server")

PROJECT_ENV = "PREFECT__CONTEXT__PROJECT_NAME"
_TRACKED_RUNS = 512
_NOT_A_UUID = "invalid input syntax for type uuid"
# The server's words for an unknown flow run (api/states.py, cancel_flow_run), for an
# archived flow version and for missing required parameters (api/runs.py).
_INVALID_RUN = "invalid flow run id"
_ARCHIVED = re.compile(r"Flow (?P<id>\S+) is archived")
_MISSING_PARAMETERS = re.compile(r"Required parameters were not supplied: (?P<names>.*?)\.?$", re.S)
# What the server and prefect's agents write, as the start of a flow run's state
# message, when the process running the flow died: the run did not fail on its
# own, it crashed.
_CRASH_MESSAGES = (
    # server: services/towel/lazarus.py, reschedule_flow_runs (after the last attempt)
    "A Lazarus process attempted to reschedule this run",
    # server: services/towel/zombie_killer.py, reap_zombie_cancelling_flow_runs
    "No heartbeat detected from the flow run",
    # prefect 1.4.1: agent/kubernetes/agent.py, manage_jobs (failed pods, pull errors)
    "Kubernetes Error: ",
)
# server: zombie_killer.py, reap_zombie_task_runs: the Failed state of a Running task
# run whose flow run's heartbeat stopped. Lazarus then reschedules the flow run, and
# its rerun ends Failed ("Some reference tasks failed."): a crash all the same.
_LOST_TASK = "No heartbeat detected from the remote task"
# server: lazarus.py, reschedule_flow_runs: the state of a run it puts back to Scheduled.
_RESCHEDULED = "Rescheduled by a Lazarus process."
# Asked with every run's state: how often Lazarus rescheduled it (the flow_run
# column it increments) and one task run the zombie killer failed, if any.
_CRASH_FIELDS = (
    "times_resurrected lost_task_runs: task_runs(where: {state: {_eq: \"Failed\"}, "
    f"state_message: {{_like: \"{_LOST_TASK}%\"}}}}, limit: 1) {{ state_message }}"
)
# Flow run states after which nothing changes (the server's `flow_run.state` column).
_FINAL_STATES = ["Success", "Failed", "Cancelled", "TimedOut", "Finished", "Skipped", "TriggerFailed"]
_RUN_FIELDS = "id flow_id serialized_state flow { name project { name } } " + _CRASH_FIELDS
# Log lines are read by the server's `created` (its clock, in the order they were
# written), not by `timestamp`, which is the client's: a batch of the runner's
# lines that lands late carries timestamps older than lines the agent wrote meanwhile.
_LOG_FIELDS = "id created timestamp level message"
# The flow runner's last line of a run (prefect/engine/flow_runner.py,
# determine_final_state): every line it logged before came in the same or an
# earlier batch.
_FLOW_RUNNER_CLOSING_LINES = ("Flow run SUCCESS:", "Flow run FAILED:")
_SETTLE_AFTER_CLOSING_LINE = 0.5
_TAIL_MIN_INTERVAL = 0.25


def _logs_selection(since: Optional[str]) -> Tuple[str, str, Dict[str, Any]]:
    """What a query adds to read a run's log lines written at or after ``since``
    (the server's `created`), in the order the server wrote them: its variable
    declarations (after ``$id: uuid!``), the ``logs`` relation with its
    arguments and fields, and its variables."""
    order = "order_by: [{created: asc}, {timestamp: asc}]"
    if not since:
        return "", f"logs({order}) {{ {_LOG_FIELDS} }}", {}
    return (
        ", $since: timestamptz",
        f"logs(where: {{created: {{_gte: $since}}}}, {order}) {{ {_LOG_FIELDS} }}",
        {"since": since},
    )
_TASK_RUN_FIELDS = "id map_index serialized_state task { slug name }"
_TASK_ERROR = re.compile(r"Error during execution of task: (?P<type>[A-Za-z_][\w.]*)\((?P<args>.*)\)\s*$", re.S)

def flow_run_state(state: prefect_state.State, lost_task: Optional[str] = None) -> FlowRunState:
    """The domain state of a flow run's Prefect state, as a Prefect Server reports it.

    As for a local run (`prefect_flows.flow_run_state`: Cancelled is not Failed
    in Prefect 1, Cancelling is still running), except that a Failed run is
    CRASHED when the server says that its process died: its message is one the
    server or an agent writes then (`_CRASH_MESSAGES`: Lazarus gave up, the
    zombie killer failed a Cancelling run, the Kubernetes agent saw its pods
    fail), or the zombie killer failed one of its task runs (``lost_task``, that
    task run's message).

    Args:
        state: The run's Prefect state.
        lost_task: The message of a task run of it that the zombie killer failed.
    """
    domain_state = local_flow_run_state(state)
    if domain_state is FlowRunState.FAILED and isinstance(state, prefect_state.Failed):
        message = str(state.message or "")
        if lost_task is not None or message.startswith(_CRASH_MESSAGES):
            return FlowRunState.CRASHED
    return domain_state


@dataclass(frozen=True)
class _ServerRun:
    """A run's state as the server reports it, with what it wrote about its process."""

    prefect: prefect_state.State
    state: FlowRunState
    times_resurrected: int
    lost_task: Optional[str]

    @property
    def rescheduled(self) -> bool:
        """Put back to Scheduled by Lazarus (then Submitted and Running again)."""
        return self.times_resurrected > 0 and not self.state.is_final

    def crash_message(self) -> Optional[str]:
        """What the server wrote about the crash, for the run's record."""
        if self.state is not FlowRunState.CRASHED:
            return None
        own = str(self.prefect.message or "")
        if own.startswith(_CRASH_MESSAGES) or self.lost_task is None:
            return own or None
        tries = self.times_resurrected
        again = f"; the server rescheduled it {tries} time{'s' if tries != 1 else ''} and it ended {own!r}" if tries else ""
        return f"the run's process stopped: {self.lost_task}{again}"


def _server_run(run: Mapping[str, Any]) -> _ServerRun:
    """`_ServerRun` of a ``flow_run`` answer that asked for `_CRASH_FIELDS`."""
    state = _deserialize(run.get("serialized_state"))
    lost = [row.get("state_message") for row in run.get("lost_task_runs") or []]
    lost_task = next((str(message) for message in lost if message), None)
    return _ServerRun(state, flow_run_state(state, lost_task), int(run.get("times_resurrected") or 0), lost_task)


def would_be_handed(run_labels: Collection[str], agent_labels: Collection[str]) -> bool:
    """Whether the server's run queue gives a run with ``run_labels`` to an agent
    polling with ``agent_labels``: the run's labels must all be the agent's, and a
    run without labels goes only to an agent without labels.

    # server: src/prefect_server/api/runs.py, get_runs_in_queue
    """
    run, agent = set(run_labels), set(agent_labels)
    if run - agent:
        return False
    return bool(run) or not agent


def _deserialize(serialized: Optional[Mapping[str, Any]]) -> prefect_state.State:
    """The Prefect state of an answer's ``serialized_state`` (checked by `answers.STATE`)."""
    if not serialized:
        return prefect_state.Scheduled(message="no state yet")
    try:
        return prefect_state.State.deserialize(dict(serialized))
    except Exception as err:  # marshmallow raises several types; no query reads an unchecked state
        raise MalformedAnswer(f"serialized_state: a Prefect state that prefect cannot read ({type(err).__name__})") from err


@dataclass
class _Tracked:
    """What this backend remembers of one flow run (bounded, per backend)."""

    flow_id: Optional[str] = None
    final: Optional[FlowRunState] = None
    log_since: Optional[str] = None  # the server's `created` of the newest log line read
    log_ids: Set[str] = field(default_factory=set)
    # Seen running, or created here: its last log batch may still be on its way.
    watched: bool = False
    closing_line_seen: bool = False  # the flow runner's own last line has been read
    tailed: bool = False
    agent_checked: bool = False
    final_run: Optional[Dict[str, Any]] = None
    created: Optional[float] = None
    server_state: Optional[str] = None  # the Prefect state's type at the last poll
    resurrections_told: int = 0  # Lazarus' reschedules of it already logged


@dataclass(frozen=True)
class _FlowInfo:
    flow_id: str
    name: str
    project_name: str
    image: Optional[str] = None
    # What the flow declares (a registered flow never changes); None: unknown.
    parameters: Optional[Tuple[FlowParameter, ...]] = None


class ServerBackend(Backend):
    """A backend whose flows run on a Prefect 1 Server's agents.

    Args:
        config: The server and the polling settings: a `PrefectServerConfig`, or
            the same in lume-services' shape (a `PrefectConfig`, or lume-services'
            own ``PrefectConfig`` object), converted by `server_config_from`;
            None is the default `PrefectServerConfig` (a server on localhost:4200).

    Raises:
        TypeError: ``config`` is none of these.
        pydantic.ValidationError: lume-services' config has an invalid field.

    Subclasses set `run_config_type` (`DockerBackend`, `KubernetesBackend`).
    """

    run_config_type: ClassVar[Type[RunConfig]] = RunConfig

    def __init__(self, config: Union[PrefectServerConfig, PrefectConfig, Any, None] = None) -> None:
        config = server_config_from(config)
        self._config = config
        self._client = ServerClient(config)
        self._lock = threading.Lock()
        self._flows: Dict[str, _FlowInfo] = {}
        self._tracked: "OrderedDict[str, _Tracked]" = OrderedDict()
        # Set by close(): waits in other threads stop at once instead of polling on.
        self._closing = threading.Event()

    @property
    def config(self) -> PrefectServerConfig:
        """The connection settings (the API key stays a SecretStr); a
        `PrefectServerConfig` however the backend was configured."""
        return self._config

    @property
    def capabilities(self) -> BackendCapabilities:
        return BackendCapabilities(server=True, cancel=True, timeout=True, isolation=True)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(api_url={self._config.api_url!r})"

    @property
    def requests_sent(self) -> int:
        """HTTP requests this backend's client has sent (retries included)."""
        return self._client.requests_sent

    # ------------------------------------------------------------- seed methods

    def run(  # type: ignore[override]
        self,
        parameters: Optional[Mapping[str, Any]] = None,
        run_config: Union[RunConfig, Mapping[str, Any], None] = None,
        *,
        flow_id: str,
        **kwargs: Any,
    ) -> Optional[str]:
        """Create a flow run of a registered flow and return its id at once.

        See `Backend.run`; ``flow_id`` is required, as in the seed.
        """
        return super().run(parameters, run_config, flow_id=flow_id, **kwargs)

    def run_and_return(  # type: ignore[override]
        self,
        parameters: Optional[Mapping[str, Any]] = None,
        run_config: Union[RunConfig, Mapping[str, Any], None] = None,
        task_name: Optional[str] = None,
        *,
        flow_id: str,
        timeout: Timeout = timedelta(minutes=1),
        cancel_on_timeout: bool = True,
        **kwargs: Any,
    ) -> Any:
        """Run a registered flow, follow it, and return its result.

        See `Backend.run_and_return`; the time-out defaults to one minute, as in
        the seed. The run's logs go to the ``lume_scheduling.server`` logger.
        """
        return super().run_and_return(
            parameters,
            run_config,
            task_name,
            flow_id=flow_id,
            timeout=timeout,
            cancel_on_timeout=cancel_on_timeout,
            **kwargs,
        )

    # ------------------------------------------------------- server operations

    def _close(self) -> None:
        # Nothing to release (each request opens its own session); runs go on
        # on the server. Waits in progress in other threads stop now.
        self._closing.set()

    def _create_project(self, project_name: str) -> None:
        with self._translated("create_project"):
            self._client.create_project(project_name=project_name)

    def _register_flow(self, flow: Any, project_name: str, **options: Any) -> str:
        if not is_prefect_flow(flow):
            raise TypeError(f"flow must be a Prefect 1 Flow, not {type(flow).__name__}")
        image = options.get("image") or self._config.default_image
        if not image:
            raise ValueError(
                "image is required: pass image= to register_flow or set "
                "PrefectServerConfig.default_image"
            )
        problem = image_reference_problem(image) if isinstance(image, str) else "it is not a string"
        if problem:
            raise ValueError(f"image {image!r} is not a valid Docker image reference: {problem}")
        labels = options.get("labels")
        fields: Dict[str, Any] = {"image": image}
        if labels is not None:
            fields["labels"] = labels
        run_config = self.run_config_type(**fields)

        registered = flow.copy()  # the caller's flow keeps its storage and run config
        registered.storage = _storage_copy(flow.storage) if flow.storage is not None else _module_storage(flow)
        registered.run_config = to_prefect_run_config(run_config)
        if registered.result is None:
            logger.warning(
                "flow %r has no result: a Prefect agent keeps no task values of it "
                "(set result=PrefectResult() on the flow to read them back)",
                flow.name,
            )
        with self._translated("register_flow"):
            try:
                flow_id = self._client.register(
                    registered,
                    project_name=project_name,
                    build=options.get("build", True),
                    set_schedule_active=options.get("set_schedule_active", True),
                    version_group_id=options.get("version_group_id"),
                    idempotency_key=options.get("idempotency_key"),
                )
            except UnknownProjectError as err:
                raise ValueError(
                    f"project_name {project_name!r} is not a project of the server: "
                    "create it with create_project() first"
                ) from err
        with self._lock:
            self._flows[flow_id] = _FlowInfo(flow_id, flow.name, project_name, image, flow_parameters(flow))
        logger.info(
            "registered flow %r in project %r as %s (%s)", flow.name, project_name, flow_id, describe(run_config)
        )
        if not options.get("no_url", False):
            print(self._registration_note(flow_id, project_name, sorted(run_config.labels)))
        return str(flow_id)

    def _registration_note(self, flow_id: str, project_name: str, labels: List[str]) -> str:
        lines = ["Flow registered:", f" └── ID: {flow_id}", f" └── Project: {project_name}", f" └── Labels: {labels}"]
        if self._config.ui_url:
            data = self._query(
                "query($id: uuid!) { flow_by_pk(id: $id) { flow_group_id } }",
                {"id": flow_id},
                "register_flow",
                expect=answers.FLOW_GROUP_ID,
            )
            group = (data.get("flow_by_pk") or {}).get("flow_group_id")
            if group:
                lines.insert(1, f" └── URL: {self._config.ui_url.rstrip('/')}/default/flow/{group}")
        return "\n".join(lines)

    def _load_flow(self, flow_name: str, project_name: str) -> Dict[str, Any]:
        data = self._query(
            """query($name: String!, $project: String!) {
                 flow(where: {name: {_eq: $name}, archived: {_eq: false}, project: {name: {_eq: $project}}},
                      order_by: {version: desc}, limit: 1) {
                   id name serialized_flow run_config project { name }
                 }
               }""",
            {"name": flow_name, "project": project_name},
            "load_flow",
            expect=answers.LOADED_FLOWS,
        )
        flows = data.get("flow") or []
        if not flows:
            raise FlowNotFoundError(flow_name, project_name)
        found = flows[0]
        try:
            loaded = prefect.serialization.flow.FlowSchema().load(found["serialized_flow"])
        except Exception as err:  # marshmallow and prefect raise several types for a bad document
            # Only the error's type: its text may quote the flow's run config.
            raise BackendUnavailableError(
                self._config.api_url,
                f"load_flow: the server's answer is malformed: data.flow[0].serialized_flow: "
                f"flow {flow_name!r} cannot be read back by prefect ({type(err).__name__})",
            ) from err
        with self._lock:
            self._flows[found["id"]] = _FlowInfo(
                found["id"],
                found["name"],
                project_name,
                (found.get("run_config") or {}).get("image"),
                serialized_flow_parameters(found.get("serialized_flow")),
            )
        return {"flow_id": found["id"], "flow": loaded}

    # ---------------------------------------------------------------- flow runs

    def _submit(self, request: FlowRunRequest) -> str:
        assert request.flow_id is not None
        info = self._flow_info(request.flow_id)
        config = request.run_config
        # The project name travels in env; the caller's own value wins.
        env = {PROJECT_ENV: info.project_name, **(config.env or {})}
        prefect_run_config = to_prefect_run_config(config, env=env)
        with self._translated("run", flow_id=request.flow_id):
            try:
                flow_run_id = self._client.create_flow_run(
                    flow_id=request.flow_id,
                    parameters=dict(request.parameters),
                    run_config=prefect_run_config,
                )
            except ClientError as err:
                refusal = self._refusal(graphql_message(err), info)
                if refusal is None:
                    raise
                raise refusal from err
        tracked = self._track(flow_run_id)
        tracked.flow_id = request.flow_id
        tracked.created = time.monotonic()
        tracked.watched = True
        logger.info(
            "created flow run %s of flow %r (%s) with %s",
            flow_run_id,
            info.name,
            request.flow_id,
            describe(config),
            extra={"flow_run_id": flow_run_id},
        )
        return str(flow_run_id)

    def _get_state(self, flow_run_id: str) -> FlowRunState:
        known = self._known_final(flow_run_id)
        if known is not None:
            return known
        data = self._query(
            f"query($id: uuid!) {{ flow_run_by_pk(id: $id) {{ serialized_state {_CRASH_FIELDS} }} }}",
            {"id": flow_run_id},
            "get_state",
            expect=answers.RUN_STATE,
            flow_run_id=flow_run_id,
        )
        run = data.get("flow_run_by_pk")
        if run is None:
            raise FlowRunNotFoundError(flow_run_id)
        return self._remember(flow_run_id, self._told(flow_run_id, _server_run(run)).state)

    def _wait(self, flow_run_id: str, timeout: Optional[float]) -> FlowRunState:
        """Poll with exponential back-off until the run has ended or ``timeout`` passes.

        The first query waits ``poll_interval`` after the run was created (it is
        scheduled until then); each following interval is ``poll_backoff`` times
        longer, up to ``poll_max_interval``; the last query is made at the deadline.
        """
        known = self._known_final(flow_run_id)
        if known is not None:
            return known
        start = time.monotonic()
        deadline = None if timeout is None else start + timeout
        tracked = self._track(flow_run_id)
        interval = self._config.poll_interval
        next_poll = start if tracked.created is None else max(start, tracked.created + interval)
        tracked.created = None
        while True:
            if deadline is not None:
                next_poll = min(next_poll, deadline)
            pause = next_poll - time.monotonic()
            if pause > 0:
                self._closing.wait(pause)
            if self._closing.is_set():
                raise BackendUnavailableError(type(self).__name__, "it was closed")
            state, labels = self._poll(flow_run_id)
            if state.is_final:
                self._tail_logs(flow_run_id)
                return state
            tracked.watched = True
            now = time.monotonic()
            if state is FlowRunState.SCHEDULED:
                self._maybe_check_agents(flow_run_id, labels, now - start)
            if deadline is not None and now >= deadline:
                return state
            interval = min(interval * self._config.poll_backoff, self._config.poll_max_interval)
            next_poll = now + interval

    def _poll(self, flow_run_id: str) -> Tuple[FlowRunState, List[str]]:
        """One query: the run's state, the logs written since the last poll and, if
        (and only if) the run has ended, its first page of task runs.

        The task runs are filtered on the run's own state on the server, so a
        running run costs nothing extra and the query that sees the end also
        brings the results: no second query for them.
        """
        tracked = self._track(flow_run_id)
        declared, logs, variables = _logs_selection(tracked.log_since)
        variables.update(id=flow_run_id, limit=self._config.task_run_page_size, final=_FINAL_STATES)
        data = self._query(
            f"query($id: uuid!, $limit: Int!, $final: [String!]{declared}) {{ flow_run_by_pk(id: $id) {{ "
            f"{_RUN_FIELDS} labels {logs} "
            f"task_runs(where: {{flow_run: {{state: {{_in: $final}}}}}}, order_by: {{id: asc}}, limit: $limit) "
            f"{{ {_TASK_RUN_FIELDS} }} }} }}",
            variables,
            "wait",
            expect=answers.POLLED_RUN,
            flow_run_id=flow_run_id,
        )
        run = data.get("flow_run_by_pk")
        if run is None:
            raise FlowRunNotFoundError(flow_run_id)
        self._stream_logs(flow_run_id, tracked, run.get("logs") or [])
        server_run = self._told(flow_run_id, _server_run(run))
        tracked.server_state = type(server_run.prefect).__name__
        state = server_run.state
        if state.is_final:
            tracked.final_run = run  # read once by the result that follows
        return self._remember(flow_run_id, state), list(run.get("labels") or [])

    def _tail_logs(self, flow_run_id: str) -> None:
        """Read a run's logs on after its final state, until they have been quiet
        for ``log_tail_quiet`` seconds (0.5 s once the flow runner's closing
        line is in), for at most ``log_tail_max`` seconds.

        Prefect's log handler ships a run's lines in batches, every few seconds
        and at process exit (``prefect/utilities/logging.py``, ``LogManager``),
        so the last batch lands after the final state. A run that had ended
        before this backend first saw it, and that it did not create, is not
        read on: its logs are taken as complete. Once per run; a backend that
        is closing stops at once.
        """
        tracked = self._track(flow_run_id)
        quiet = self._config.log_tail_quiet
        if tracked.tailed or not tracked.watched or quiet <= 0:
            return
        tracked.tailed = True
        start = time.monotonic()
        give_up = start + self._config.log_tail_max
        last_news = start
        interval = max(_TAIL_MIN_INTERVAL, quiet / 4)
        while True:
            settle = min(quiet, _SETTLE_AFTER_CLOSING_LINE) if tracked.closing_line_seen else quiet
            until = min(last_news + settle, give_up)
            now = time.monotonic()
            if now >= until:
                return
            if self._closing.wait(min(interval, until - now)):
                return
            if self._read_logs(flow_run_id, tracked):
                last_news = time.monotonic()

    def _read_logs(self, flow_run_id: str, tracked: _Tracked) -> int:
        """One query for the run's log lines written since the last read; returns
        how many new lines it streamed."""
        declared, logs, variables = _logs_selection(tracked.log_since)
        variables["id"] = flow_run_id
        data = self._query(
            f"query($id: uuid!{declared}) {{ flow_run_by_pk(id: $id) {{ {logs} }} }}",
            variables,
            "wait",
            expect=answers.RUN_LOGS,
            flow_run_id=flow_run_id,
        )
        run = data.get("flow_run_by_pk")
        if run is None:
            raise FlowRunNotFoundError(flow_run_id)
        return self._stream_logs(flow_run_id, tracked, run.get("logs") or [])

    def _stream_logs(self, flow_run_id: str, tracked: _Tracked, logs: List[Mapping[str, Any]]) -> int:
        """Log each line not read before to our logger; returns how many."""
        streamed = 0
        secrets = self._log_secrets(flow_run_id) if logs else ()
        for entry in logs:
            log_id = str(entry.get("id"))
            if log_id in tracked.log_ids:
                continue
            created = entry.get("created")
            if created != tracked.log_since:
                tracked.log_ids.clear()  # ids are only needed for the newest `created`
            tracked.log_ids.add(log_id)
            tracked.log_since = created
            streamed += 1
            message = str(entry.get("message"))
            if message.startswith(_FLOW_RUNNER_CLOSING_LINES):
                tracked.closing_line_seen = True
            level = logging.getLevelName(str(entry.get("level") or "INFO").upper())
            logger.log(
                level if isinstance(level, int) else logging.INFO,
                "[flow run %s] %s",
                flow_run_id,
                mask_text(message, secrets),
                # flow_log: a line of the flow itself, which the CLI's --quiet silences.
                extra={"flow_run_id": flow_run_id, "flow_log": True},
            )
        return streamed

    def _told(self, flow_run_id: str, server_run: _ServerRun) -> _ServerRun:
        """Say (once per attempt) that the server rescheduled the run after its
        process stopped: without it the run only looks scheduled again, for as
        long as the server takes to notice (10 minutes and more by default)."""
        tracked = self._track(flow_run_id)
        attempt = server_run.times_resurrected
        if server_run.rescheduled and attempt > tracked.resurrections_told:
            tracked.resurrections_told = attempt
            logger.warning(
                "flow run %s: the server rescheduled the run after its run process stopped "
                "(attempt %d of %d)%s",
                flow_run_id,
                attempt,
                self._config.resurrection_attempt_limit,
                f": {server_run.lost_task}" if server_run.lost_task else "",
                extra={"flow_run_id": flow_run_id},
            )
        return server_run

    def _maybe_check_agents(self, flow_run_id: str, labels: List[str], waited: float) -> None:
        """Once per run, when it has been scheduled for ``agent_check_after`` s: warn
        unless an agent that polls the server would be handed it.

        An agent counts if its ``last_queried`` is within ``agent_stale_after`` s
        (a real server keeps the rows of agents that died) and the server's run
        queue would give it the run (`would_be_handed`). The warning names the
        run's labels and every agent seen, with its labels and last poll.
        """
        after = self._config.agent_check_after
        tracked = self._track(flow_run_id)
        if after is None or tracked.agent_checked or waited < after:
            return
        tracked.agent_checked = True
        data = self._query("query { agent { id name labels last_queried } }", {}, "wait", expect=answers.AGENTS)
        now = pendulum.now("UTC")
        stale_after = self._config.agent_stale_after
        seen = []
        for agent in data["agent"]:
            agent_labels = list(agent.get("labels") or [])
            last = agent.get("last_queried")
            ago = None if last is None else (now - pendulum.parse(last)).total_seconds()
            if ago is not None and ago <= stale_after and would_be_handed(labels, agent_labels):
                return
            polled = "never polled" if ago is None else f"last polled {max(ago, 0.0):.0f} s ago"
            seen.append(f"{agent.get('name') or agent['id']!r} with labels {sorted(agent_labels)} ({polled})")
        logger.warning(
            "flow run %s has waited %.0f s and no agent that would be handed it has polled the server "
            "in the last %g s: the run's labels are %s; agents seen: %s. Start a Docker or Kubernetes "
            "agent whose labels include all of the run's labels (a run without labels goes only to an "
            "agent without labels)",
            flow_run_id,
            waited,
            stale_after,
            sorted(labels),
            "; ".join(seen) if seen else "none",
            extra={"flow_run_id": flow_run_id},
        )

    def _get_result(self, flow_run_id: str) -> FlowRunResult:
        return self._read_result(flow_run_id, None, load_all=True)

    def _get_task_result(self, flow_run_id: str, task_name: Optional[str]) -> FlowRunResult:
        return self._read_result(flow_run_id, task_name, load_all=task_name is None)

    def _read_result(self, flow_run_id: str, task_name: Optional[str], *, load_all: bool) -> FlowRunResult:
        """One query for the run and its first page of task runs; more pages if needed.

        Values are read from the result locations only for the task runs that
        ``task_name`` selects (all of them when ``load_all``).
        """
        size = self._config.task_run_page_size
        tracked = self._track(flow_run_id)
        with self._lock:
            run, tracked.final_run = tracked.final_run, None
        if run is None:
            data = self._query(
                f"query($id: uuid!, $limit: Int!) {{ flow_run_by_pk(id: $id) {{ {_RUN_FIELDS} "
                f"task_runs(order_by: {{id: asc}}, limit: $limit) {{ {_TASK_RUN_FIELDS} }} }} }}",
                {"id": flow_run_id, "limit": size},
                "get_result",
                expect=answers.RUN_RESULT,
                flow_run_id=flow_run_id,
            )
            run = data.get("flow_run_by_pk")
            if run is None:
                raise FlowRunNotFoundError(flow_run_id)
        rows = list(run.get("task_runs") or [])
        page = rows
        while len(page) == size:
            more = self._query(
                "query($id: uuid!, $limit: Int!, $offset: Int!) { task_run(where: {flow_run_id: {_eq: $id}}, "
                f"order_by: {{id: asc}}, limit: $limit, offset: $offset) {{ {_TASK_RUN_FIELDS} }} }}",
                {"id": flow_run_id, "limit": size, "offset": len(rows)},
                "get_result",
                expect=answers.TASK_RUN_PAGE,
                flow_run_id=flow_run_id,
            )
            page = list(more.get("task_run") or [])
            rows.extend(page)
        server_run = _server_run(run)
        flow_state = server_run.prefect
        state = self._remember(flow_run_id, server_run.state)
        flow = run.get("flow") or {}
        task_runs = _task_runs(rows, task_name, load_all)
        message = None if flow_state.message is None else str(flow_state.message)
        exception_type = None
        if state is FlowRunState.CRASHED:
            message = server_run.crash_message()  # the server's words, not a task's exception
        elif state is not FlowRunState.SUCCESS:
            cause = _root_failure(task_runs)
            if cause is not None:
                exception_type, message = cause
        return FlowRunResult(
            flow_run_id=flow_run_id,
            flow_id=run.get("flow_id"),
            state=state,
            task_runs=tuple(task_runs),
            message=message,
            flow_name=flow.get("name"),
            project_name=(flow.get("project") or {}).get("name"),
            exception_type=exception_type,
        )

    def _cancel(self, flow_run_id: str) -> bool:
        if self._get_state(flow_run_id).is_final:
            return False
        logger.info("cancelling flow run %s", flow_run_id, extra={"flow_run_id": flow_run_id})
        deadline = time.monotonic() + self._config.cancel_timeout
        tracked = self._track(flow_run_id)
        # Prefect's runner notices Cancelling and writes Cancelled; wait for it, within
        # reason. Prefect Server keeps no version lock: an agent's Submitted or a runner's
        # Running written just after the cancel replaces it, so the cancel is sent again
        # whenever the run is seen neither ended nor Cancelling. The first polls come
        # quickly: such a write lands within a second, before the run's process starts.
        interval = min(self._config.poll_interval, 0.1)
        while True:
            with self._translated("cancel", flow_run_id=flow_run_id):
                self._client.cancel_flow_run(flow_run_id=flow_run_id)
            while True:
                time.sleep(max(0.0, min(interval, deadline - time.monotonic())))
                state, _labels = self._poll(flow_run_id)
                if state.is_final:
                    return state is FlowRunState.CANCELLED
                if time.monotonic() >= deadline:
                    return True
                interval = min(interval * self._config.poll_backoff, self._config.poll_max_interval)
                if tracked.server_state != "Cancelling":
                    break

    # ------------------------------------------------------------ shared helpers

    def _request(
        self,
        parameters: Optional[Mapping[str, Any]],
        run_config: Union[RunConfig, Mapping[str, Any], None],
        flow: Any,
        flow_id: Optional[str],
        kwargs: Mapping[str, Any],
        caller: str,
    ) -> FlowRunRequest:
        """As `Backend._request`, but a run config built from keyword arguments
        without ``image`` gets the image the flow was registered with (else
        ``default_image``): the seed's ``run(flow_id=...)`` needs no image.
        """
        self._check_target(flow, flow_id)  # a TypeError before any query
        if run_config is None and "image" not in kwargs and flow_id is not None:
            image = self._flow_info(flow_id).image or self._config.default_image
            if image is not None:
                kwargs = {**kwargs, "image": image}
        return super()._request(parameters, run_config, flow, flow_id, kwargs, caller)

    def _flow_info(self, flow_id: str) -> _FlowInfo:
        with self._lock:
            known = self._flows.get(flow_id)
        if known is not None:
            return known
        data = self._query(
            "query($id: uuid!) { flow_by_pk(id: $id) { id name run_config serialized_flow project { name } } }",
            {"id": flow_id},
            "run",
            expect=answers.FLOW_INFO,
            flow_id=flow_id,
        )
        found = data.get("flow_by_pk")
        if found is None:
            raise FlowNotFoundError(flow_id=flow_id)
        info = _FlowInfo(
            flow_id,
            found["name"],
            (found.get("project") or {}).get("name", ""),
            (found.get("run_config") or {}).get("image"),
            serialized_flow_parameters(found.get("serialized_flow")),
        )
        with self._lock:
            self._flows[flow_id] = info
        return info

    def _flow_parameters(self, flow: Any, flow_id: Optional[str]) -> Optional[DeclaredParameters]:
        """From the flow as registered (read once per flow id): the server itself
        accepts unknown names silently."""
        if flow_id is None:
            return None
        info = self._flow_info(flow_id)
        return None if info.parameters is None else (info.name, info.parameters)

    def _default_parameters(self, flow: Any, flow_id: Optional[str]) -> Collection[str]:
        """The flow group's default parameters, which the server uses for those a
        run leaves out (read afresh: they can be changed at any time)."""
        if flow_id is None:
            return ()
        data = self._query(
            "query($id: uuid!) { flow_by_pk(id: $id) { flow_group { default_parameters } } }",
            {"id": flow_id},
            "run",
            expect=answers.DEFAULT_PARAMETERS,
            flow_id=flow_id,
        )
        group = (data.get("flow_by_pk") or {}).get("flow_group") or {}
        defaults = group.get("default_parameters") if isinstance(group, Mapping) else None
        return list(defaults) if isinstance(defaults, Mapping) else ()

    def _secrets_of_run(self, flow_run_id: str, record: FlowRunResult) -> Sequence[str]:
        """Also for runs this backend did not create (e.g. ``result RUN_ID`` in
        another process) that did not succeed, where an exception's text may
        quote an env value: the run's run config, env values included, is read
        back from the server once. A successful run's messages are Prefect's
        own, so it costs no request."""
        known = self._run_secrets_store().get(flow_run_id)
        if known is not None:
            return known
        if record.state is FlowRunState.SUCCESS:
            return ()
        return self._read_run_secrets(flow_run_id, "get_result")

    def _log_secrets(self, flow_run_id: str) -> Sequence[str]:
        """The env values to mask in the run's log lines forwarded from the server,
        as the local backend masks its runs' lines: a run's own lines may print
        its env (a task's exception, a print of a setting). Known for the runs this
        backend created; read back from the server once for others."""
        known = self._run_secrets_store().get(flow_run_id)
        if known is not None:
            return known
        return self._read_run_secrets(flow_run_id, "wait")

    def _read_run_secrets(self, flow_run_id: str, operation: str) -> Sequence[str]:
        """The env values of the run's run config, read from the server and remembered."""
        store = self._run_secrets_store()
        data = self._query(
            "query($id: uuid!) { flow_run_by_pk(id: $id) { run_config } }",
            {"id": flow_run_id},
            operation,
            expect=answers.RUN_CONFIG_OF_RUN,
            flow_run_id=flow_run_id,
        )
        run_config = (data.get("flow_run_by_pk") or {}).get("run_config")
        env = run_config.get("env") if isinstance(run_config, Mapping) else None
        # The project name travels in env too; it is no secret.
        user_env = {k: v for k, v in env.items() if k != PROJECT_ENV} if isinstance(env, Mapping) else None
        secrets = secret_values(user_env)
        store.remember(flow_run_id, secrets)
        return secrets

    def _track(self, flow_run_id: str) -> _Tracked:
        with self._lock:
            tracked = self._tracked.get(flow_run_id)
            if tracked is None:
                tracked = self._tracked[flow_run_id] = _Tracked()
                while len(self._tracked) > _TRACKED_RUNS:
                    self._tracked.popitem(last=False)
            return tracked

    def _known_final(self, flow_run_id: str) -> Optional[FlowRunState]:
        with self._lock:
            tracked = self._tracked.get(flow_run_id)
            return None if tracked is None else tracked.final

    def _remember(self, flow_run_id: str, state: FlowRunState) -> FlowRunState:
        if state.is_final:
            # A final state never changes: later waits and state queries cost nothing.
            self._track(flow_run_id).final = state
        return state

    def _query(
        self,
        query: str,
        variables: Mapping[str, Any],
        operation: str,
        *,
        expect: answers.Shape,
        flow_id: Optional[str] = None,
        flow_run_id: Optional[str] = None,
    ) -> Dict[str, Any]:
        """The ``data`` of one query's answer, once it fits ``expect`` (`_answers`).

        Raises:
            BackendUnavailableError: Naming the server and ``operation``: the
                server cannot be reached, or its answer is not what ``expect``
                says (where it is not, and what was expected).
            FlowNotFoundError, FlowRunNotFoundError: See `_translated`.
        """
        with self._translated(operation, flow_id=flow_id, flow_run_id=flow_run_id):
            answer = self._client.answer(query, variables=dict(variables))
            return answers.read(answer["data"], expect)

    def _refusal(self, message: str, info: _FlowInfo) -> Optional[SchedulingError]:
        """The domain error for the server's refusal of a new flow run, if it is one
        we know: an archived flow version, or missing required parameters."""
        if _ARCHIVED.search(message):
            newest_id, newest_version, version = self._newest_version(info.flow_id)
            return FlowArchivedError(
                info.flow_id,
                flow_name=info.name,
                project_name=info.project_name or None,
                version=version,
                newest_flow_id=newest_id,
                newest_version=newest_version,
            )
        missing = _MISSING_PARAMETERS.search(message)
        if missing:
            # The server writes a Python set: {'x', 'y'}.
            names = re.findall(r"'([^']*)'", missing.group("names"))
            return FlowParameterError(info.name, missing=names, parameters=info.parameters or ())
        return None

    def _newest_version(self, flow_id: str) -> Tuple[Optional[str], Optional[int], Optional[int]]:
        """(id, version) of the newest unarchived version of ``flow_id``'s flow group,
        and ``flow_id``'s own version; None where the server does not say (asking is
        a courtesy: its failure leaves them unknown)."""
        try:
            data = self._query(
                "query($id: uuid!) { flow_by_pk(id: $id) { version flow_group { "
                "flows(where: {archived: {_eq: false}}, order_by: {version: desc}, limit: 1) { id version } } } }",
                {"id": flow_id},
                "run",
                expect=answers.NEWEST_VERSION,
            )
        except BackendUnavailableError:
            return None, None, None
        flow = data["flow_by_pk"] or {}
        newest = ((flow.get("flow_group") or {}).get("flows") or [{}])[0]
        return newest.get("id"), newest.get("version"), flow.get("version")

    @contextmanager
    def _translated(
        self, operation: str, *, flow_id: Optional[str] = None, flow_run_id: Optional[str] = None
    ) -> Iterator[None]:
        """Turn prefect and transport errors into domain errors, with the server's words."""
        try:
            yield
        except MalformedAnswer as err:
            raise BackendUnavailableError(
                self._config.api_url, f"{operation}: the server's answer is malformed: {err.problem}"
            ) from err
        except SchedulingError:
            raise
        except AuthorizationError as err:
            raise BackendUnavailableError(
                self._config.api_url, f"{operation}: not authorised: {graphql_message(err)}"
            ) from err
        except ClientError as err:
            message = graphql_message(err)
            lowered = message.lower()
            unknown = _NOT_A_UUID in lowered or "not found" in lowered
            if flow_run_id is not None and (unknown or _INVALID_RUN in lowered):
                raise FlowRunNotFoundError(flow_run_id) from err
            if flow_id is not None and unknown:
                raise FlowNotFoundError(flow_id=flow_id) from err
            raise BackendUnavailableError(self._config.api_url, f"{operation}: {message}") from err


def _storage_copy(storage: Any) -> Any:
    """A copy of a flow's storage, so that registering does not add to the caller's."""
    duplicate = copy.copy(storage)
    duplicate.flows = dict(getattr(storage, "flows", {}))
    if hasattr(storage, "_flows"):
        duplicate._flows = dict(storage._flows)
    return duplicate


def _module_storage(flow: Any) -> Module:
    """Module storage of the importable module that defines ``flow`` at top level.

    Raises:
        ValueError: No importable module holds the flow (e.g. it was built in
            ``__main__`` or inside a function): an agent could not load it.
    """
    for name, module in list(sys.modules.items()):
        # Only modules an agent can import by name (not __main__, not built in memory).
        if module is None or name == "__main__" or getattr(module, "__spec__", None) is None:
            continue
        try:
            members = vars(module)
        except TypeError:
            continue
        if any(member is flow for member in list(members.values())):
            return Module(name)
    raise ValueError(
        f"flow {flow.name!r} has no storage and is not a top-level name of an importable "
        "module, so no agent could load it: define it in a module of an installed package "
        "or give it storage (e.g. prefect.storage.Module('package.module'))"
    )


def _task_runs(rows: List[Mapping[str, Any]], task_name: Optional[str], load_all: bool) -> List[TaskRun]:
    parsed = []
    for row in rows:
        task = row.get("task") or {}
        index = row.get("map_index")
        parsed.append(
            (
                str(task.get("slug")),
                str(task.get("name") or task.get("slug")),
                None if index is None or index < 0 else int(index),
                _deserialize(row.get("serialized_state")),
            )
        )
    parents = [entry for entry in parsed if entry[2] is None]
    if load_all:
        wanted = {entry[0] for entry in parents}
    else:
        by_name = {slug for slug, name, _, _ in parents if name == task_name}
        wanted = by_name or {slug for slug, _, _, _ in parents if slug == task_name}
    children: Dict[str, List[TaskRun]] = {}
    runs: List[TaskRun] = []
    for slug, name, index, state in sorted(parsed, key=lambda e: (e[0], -1 if e[2] is None else e[2])):
        domain_state = task_run_state(state)
        value = None
        # A mapped parent holds no value of its own: it is built from its children.
        if slug in wanted and domain_state is TaskRunState.SUCCESS and not isinstance(state, prefect_state.Mapped):
            value = _value(slug, index, state)
        run = TaskRun(slug, name, domain_state, value, index, _state_message(state))
        if index is not None:
            children.setdefault(slug, []).append(run)
        runs.append(run)
    # The parent of a mapped task: its value is the list of its children's values.
    finished: List[TaskRun] = []
    for run in runs:
        kids = children.get(run.slug)
        if run.map_index is None and kids:
            ok = all(kid.state.is_successful for kid in kids) and run.state.is_successful
            run = TaskRun(
                run.slug,
                run.name,
                TaskRunState.SUCCESS if ok else TaskRunState.FAILED,
                [kid.value for kid in kids] if ok and run.slug in wanted else None,
                None,
                run.message,
            )
        finished.append(run)
    return finished


def _value(slug: str, index: Optional[int], state: prefect_state.State) -> Any:
    """Read a task run's value from its result location (PrefectResult, LocalResult...)."""
    result = getattr(state, "_result", None)
    if result is None or getattr(result, "location", None) is None:
        return None
    try:
        state.load_result()
    except Exception as err:  # result backends raise anything (missing file, no credentials)
        key = slug if index is None else f"{slug}[{index}]"
        logger.warning("the value of task %s cannot be read from %s: %s", key, type(result).__name__, err)
        return None
    return state.result


def _state_message(state: prefect_state.State) -> Optional[str]:
    return None if state.message is None else str(state.message)


def _root_failure(task_runs: List[TaskRun]) -> Optional[Tuple[str, str]]:
    """(exception type, message) of the first task that failed on its own."""
    fallback = None
    for run in task_runs:
        if run.state is not TaskRunState.FAILED or not run.message:
            continue
        match = _TASK_ERROR.search(run.message)
        if match is None:
            if "trigger" not in run.message.lower():
                fallback = fallback or ("TaskFailed", f"task {run.key!r}: {run.message}")
            continue
        args = match.group("args")
        try:
            detail = ast.literal_eval(args)
            detail = str(detail)
        except (ValueError, SyntaxError):
            detail = args
        return match.group("type"), f"task {run.key!r}: {detail}"
    return fallback


class DockerBackend(ServerBackend):
    """Flows run in containers started by a Prefect Docker agent (docker-compose)."""

    run_config_type: ClassVar[Type[RunConfig]] = DockerRunConfig


class KubernetesBackend(ServerBackend):
    """Flows run as Kubernetes jobs started by a Prefect Kubernetes agent."""

    run_config_type: ClassVar[Type[RunConfig]] = KubernetesRunConfig
