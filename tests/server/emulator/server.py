"""`EmulatedServer`: the emulated Prefect Server on a free port of 127.0.0.1, with its
background services, its request log and its scripted faults."""

from __future__ import annotations

import json
import logging
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Dict, List, Optional, Tuple

from graphql import FieldNode, OperationDefinitionNode

from .faults import AGENT, CLIENT, RUNNER, Faults
from .hasura import Hasura
from .routes import Request, Routes, parse_query
from .rules import Rules
from .services import Towel
from .settings import Settings
from .store import Store

logger = logging.getLogger(__name__)
AGENT_API_KEY = "emulated-agents-key"


@dataclass
class LoggedRequest:
    """One request the server answered: who sent it, its top-level fields, its GraphQL."""

    source: str
    names: List[str]
    query: str
    task_runs: int = 0
    status: int = 0
    errors: List[str] = field(default_factory=list)


class EmulatedServer:
    """The HTTP front: POST GraphQL to `url`.

    Args:
        store: The database (a new one by default).
        settings: The deployment's configuration (`Settings.for_tests()` by default).
            Assign a new `Settings` to `settings` at any time: the services read it
            at every turn.
        bind: The address it listens on (127.0.0.1; "0.0.0.0" for flow runs in
            containers, which reach it at their bridge's gateway).

    Attributes:
        url: The GraphQL endpoint, for ``PrefectServerConfig.api_url`` and agents'
            ``PREFECT__CLOUD__API``.
        agent_api_key: The key agents (and the runners they start) authenticate
            with; Prefect Server accepts any key, the emulator uses it to tell their
            requests from a client's.
        faults: `Faults` to script.
        log: Every answered request, in order (`LoggedRequest`).
    """

    def __init__(self, store: Optional[Store] = None, settings: Optional[Settings] = None,
                 bind: str = "127.0.0.1") -> None:
        self.store = store or Store()
        self.settings = settings or Settings.for_tests()
        self.rules = Rules(self.store, self.settings)
        self.hasura = Hasura(self.store)
        self.routes = Routes(self.rules, self.hasura)
        self.faults = Faults()
        self.agent_api_key = AGENT_API_KEY
        self.log: List[LoggedRequest] = []
        self._log_lock = threading.Lock()
        self._towel = Towel(self.rules, lambda: self.settings)
        emulator = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:  # keep test output clean
                pass

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                status, answer = emulator._answer(body, {k.lower(): v for k, v in self.headers.items()})
                payload = json.dumps(answer).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                # one request per connection: no handler thread outlives its answer
                self.send_header("Connection", "close")
                self.close_connection = True
                self.end_headers()
                self.wfile.write(payload)

        # ``bind`` "0.0.0.0" for flow runs in containers on a bridge network (they reach
        # the host at the bridge's gateway); the url stays the loopback address.
        self._httpd = ThreadingHTTPServer((bind, 0), Handler)
        self._httpd.daemon_threads = True
        self.port = self._httpd.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}/graphql"
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                        name=f"emulated-server-{self.port}", daemon=True)
        self._running = False

    # ------------------------------------------------------------ lifecycle
    def start(self) -> "EmulatedServer":
        self._thread.start()
        self._towel.start()
        self._running = True
        return self

    def stop(self) -> None:
        """Shut the server down: the next request is refused."""
        self._towel.stop()
        if self._running:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._thread.join(5)
            self._running = False

    @property
    def running(self) -> bool:
        return self._running

    def threads(self) -> List[threading.Thread]:
        return [t for t in (self._thread, self._towel._thread) if t.is_alive()]

    def reset(self, settings: Optional[Settings] = None) -> None:
        """A fresh database (agent rows kept), no faults, an empty log."""
        self.settings = settings or Settings.for_tests()
        self.rules.settings = self.settings
        self.rules.reset()
        self.store.reset()
        self.faults.reset()
        with self._log_lock:
            self.log.clear()

    # ---------------------------------------------------------- request log
    def requests_of(self, source: str = CLIENT) -> List[LoggedRequest]:
        with self._log_lock:
            return [r for r in self.log if r.source == source]

    @property
    def requests(self) -> List[List[str]]:
        """The top-level fields of each client request (agents and runners left out)."""
        return [r.names for r in self.requests_of(CLIENT)]

    @property
    def queries(self) -> List[str]:
        return [r.query for r in self.requests_of(CLIENT)]

    @property
    def task_runs_returned(self) -> List[int]:
        """Task run rows in each answered client request."""
        return [r.task_runs for r in self.requests_of(CLIENT)]

    @property
    def request_count(self) -> int:
        return len(self.requests_of(CLIENT))

    # compatibility with the earlier emulator's fault methods
    def fail_next(self, count: int = 1, status: int = 500, body: str = "Internal Server Error") -> None:
        self.faults.fail_next(count, status, body)

    def graphql_error_next(self, message: str, count: int = 1) -> None:
        self.faults.graphql_error_next(message, count)

    @property
    def delay(self) -> float:
        return self.faults.delay

    @delay.setter
    def delay(self, seconds: float) -> None:
        self.faults.delay = seconds

    # --------------------------------------------------------------- answer
    def _source(self, headers: Dict[str, str]) -> str:
        if headers.get("x-prefect-agent-id"):
            return AGENT
        if headers.get("authorization") == f"Bearer {self.agent_api_key}":
            return RUNNER
        return CLIENT

    def _answer(self, body: bytes, headers: Dict[str, str]) -> Tuple[int, Any]:
        source = self._source(headers)
        try:
            request = json.loads(body or b"{}")
            variables = request.get("variables") or {}
            if isinstance(variables, str):
                variables = json.loads(variables) or {}
            query = str(request.get("query", ""))
        except ValueError as err:
            return 400, {"errors": [{"message": f"bad request: {err}"}]}
        entry = LoggedRequest(source, _top_level(query), query)
        pause = self.faults.delay_for(source, entry.names)
        if pause:
            time.sleep(pause)
        with self._log_lock:
            self.log.append(entry)
        fault = self.faults.take(source, entry.names)
        if fault is not None and not fault.runs_the_request:
            entry.status = fault.status
            if fault.graphql_message is not None:
                entry.errors = [fault.graphql_message]
                return 200, {"errors": [{"message": fault.graphql_message}]}
            entry.errors = [fault.body]
            return fault.status, {"message": fault.body}
        if fault is not None and fault.before is not None:
            fault.before()
        try:
            call = Request(query, variables, {k: v for k, v in headers.items() if k.startswith("x-prefect")})
            status, answer = self.routes.execute(call)
            entry.task_runs = call.counted.get("task_run", 0)
        except Exception as err:  # an emulator bug shows as a server error, with its cause
            logger.exception("emulator error answering %s", entry.names)
            status, answer = 500, {"errors": [{"message": f"emulator error: {err!r}"}]}
        entry.status = status
        entry.errors = [str(e.get("message")) for e in answer.get("errors", [])]
        if fault is not None and fault.rewrite is not None:
            entry.status = fault.status
            return fault.status, fault.rewrite(answer)
        return status, answer


def _top_level(query: str) -> List[str]:
    try:
        document = parse_query(query)
    except Exception:
        return ["<unparsable>"]
    names = []
    for definition in document.definitions:
        if isinstance(definition, OperationDefinitionNode):
            names.extend(s.name.value for s in definition.selection_set.selections if isinstance(s, FieldNode))
    return names
