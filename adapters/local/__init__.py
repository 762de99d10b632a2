"""The local backend: Prefect 1 flows run on this machine.

`LocalBackend()` runs each flow run in a warm worker process (time-outs and
cancel kill it for real, a crash cannot take the caller down, env and
working_dir never leak); `LocalBackend(isolated=False)` runs them in threads of
this process, for debugging. See the README, "The local backend".
"""

from .backend import LOGGER_NAME, LocalBackend

__all__ = ["LOGGER_NAME", "LocalBackend"]
