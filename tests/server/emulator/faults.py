"""Scripted faults: what a test makes the server do wrong, to the requests of one
kind of client only (by default the backend under test, never the agents).

Requests are told apart by who sends them: an agent's carry its
``X-PREFECT-AGENT-ID`` header, a flow run's runner authenticates with the key the
agents were given (`EmulatedServer.agent_api_key`), anything else is a client.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

CLIENT, AGENT, RUNNER, ANY = "client", "agent", "runner", "any"


@dataclass
class Fault:
    """One scripted failure: an HTTP error answer, a GraphQL error answer, an
    answer rewritten after the request ran, or an action just before it runs.

    ``operation`` (a top-level field, e.g. ``flow_run_by_pk``) limits the fault to
    the requests that ask for it; None takes the next request of ``source``.
    """

    source: str
    status: int = 500
    body: str = "Internal Server Error"
    graphql_message: Optional[str] = None
    operation: Optional[str] = None
    rewrite: Optional[Callable[[Any], Any]] = None
    before: Optional[Callable[[], None]] = None

    @property
    def runs_the_request(self) -> bool:
        """Whether the request is executed (its effects happen) despite the fault."""
        return self.rewrite is not None or self.before is not None


class Faults:
    """The faults waiting for their requests, and a delay before every answer.

    Attributes:
        delay: Seconds the server waits before answering a request of
            ``delay_source``.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._queue: List[Fault] = []
        self._slow: Dict[str, Tuple[float, str]] = {}
        self.delay = 0.0
        self.delay_source = CLIENT

    def reset(self) -> None:
        with self._lock:
            self._queue.clear()
            self._slow.clear()
        self.delay, self.delay_source = 0.0, CLIENT

    def slow_down(self, operation: str, seconds: float, source: str = ANY) -> None:
        """Requests of ``source`` asking for ``operation`` (a top-level field, e.g.
        ``write_run_logs``) are answered ``seconds`` late: a slow network or a busy
        server, to make an ordering that happens by chance happen every time."""
        with self._lock:
            self._slow[operation] = (seconds, source)

    def fail_next(self, count: int = 1, status: int = 500, body: str = "Internal Server Error", source: str = CLIENT) -> None:
        """The next ``count`` requests of ``source`` get HTTP ``status`` with ``body``."""
        with self._lock:
            self._queue.extend(Fault(source, status, body) for _ in range(count))

    def graphql_error_next(self, message: str, count: int = 1, source: str = CLIENT) -> None:
        """The next ``count`` requests of ``source`` get a GraphQL error ``message``."""
        with self._lock:
            self._queue.extend(Fault(source, 200, "", message) for _ in range(count))

    def rewrite_next(
        self, rewrite: Callable[[Any], Any], operation: Optional[str] = None, status: int = 200, source: str = CLIENT
    ) -> None:
        """The next request of ``source`` (asking for ``operation``, if given) runs as
        usual, and is answered ``rewrite(answer)`` (any JSON value) with HTTP
        ``status`` instead of its own answer: a broken proxy, or a server of another
        version."""
        with self._lock:
            self._queue.append(Fault(source, status, "", operation=operation, rewrite=rewrite))

    def before_next(self, operation: str, action: Callable[[], None], source: str = CLIENT) -> None:
        """``action()`` runs just before the next request of ``source`` asking for
        ``operation`` is executed (e.g. another user deletes the run it is about)."""
        with self._lock:
            self._queue.append(Fault(source, 200, "", operation=operation, before=action))

    def pending(self) -> int:
        """Faults still waiting for their request."""
        with self._lock:
            return len(self._queue)

    def take(self, source: str, operations: Sequence[str] = ()) -> Optional[Fault]:
        """The fault for a request of ``source`` asking for ``operations`` (top-level
        fields), if one waits (it is used up)."""
        with self._lock:
            for index, fault in enumerate(self._queue):
                if fault.source in (source, ANY) and (fault.operation is None or fault.operation in operations):
                    return self._queue.pop(index)
        return None

    def delay_for(self, source: str, operations: Sequence[str] = ()) -> float:
        """Seconds to wait before answering a request of ``source`` for ``operations``."""
        pause = self.delay if self.delay_source in (source, ANY) else 0.0
        with self._lock:
            for operation in operations:
                seconds, target = self._slow.get(operation, (0.0, ""))
                if target in (source, ANY):
                    pause = max(pause, seconds)
        return pause
