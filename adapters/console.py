"""The ``lume-scheduling`` console script's entry point.

It imports next to nothing before it takes Ctrl-C and SIGTERM, so that one
arriving while the command line is still being imported also ends with one
line and the usual exit code instead of a traceback; then it hands over to
`lume_scheduling.adapters.cli.main`. Once the command is done (its backend
closed), it runs the exit handlers and leaves without tearing the interpreter
down, which takes seconds on a busy machine once prefect is imported.
"""

from __future__ import annotations

import atexit
import os
import signal
import sys
from typing import Any, NoReturn, Optional, Union

PROG = "lume-scheduling"


class _EarlyTermination(KeyboardInterrupt):
    """SIGTERM while the command line was being imported."""


def _interrupt(signum: int, frame: Any) -> None:
    raise _EarlyTermination() if signum == signal.SIGTERM else KeyboardInterrupt()


def _stopped(interrupted: KeyboardInterrupt) -> int:
    terminated = isinstance(interrupted, _EarlyTermination)
    print(f"{PROG}: {'terminated' if terminated else 'aborted'}", file=sys.stderr, flush=True)
    return 143 if terminated else 130


def _exit_code(code: Union[int, str, None]) -> int:
    if code is None:
        return 0
    if isinstance(code, int):
        return code
    print(code, file=sys.stderr)
    return 1


def _leave(code: int) -> NoReturn:
    """Run the exit handlers (logging, multiprocessing's finalizers), flush, and
    exit at once."""
    run_exit_handlers = getattr(atexit, "_run_exitfuncs", None)
    if run_exit_handlers is not None:
        run_exit_handlers()
    for stream in (sys.stdout, sys.stderr):
        try:
            if stream is not None:
                stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(code)


def main() -> None:
    """Run the command line (see `lume_scheduling.adapters.cli`) and exit with its code."""
    signal.signal(signal.SIGINT, _interrupt)
    signal.signal(signal.SIGTERM, _interrupt)
    code: Optional[int] = None
    try:
        from lume_scheduling.adapters.cli import main as cli_main

        cli_main()  # installs its own handlers first thing, and exits
    except SystemExit as done:
        code = _exit_code(done.code)
    except KeyboardInterrupt as interrupted:  # while it was imported, or the instant after
        code = _stopped(interrupted)
    _leave(0 if code is None else code)


if __name__ == "__main__":  # pragma: no cover
    main()
