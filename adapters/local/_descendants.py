"""The processes a flow run starts, found and killed, so that none outlives its
worker (Linux; elsewhere these are no-ops and only the worker's process group
is killed).

A worker makes itself a *child subreaper* (``prctl(PR_SET_CHILD_SUBREAPER)``):
a process a task starts whose parent exits (a daemon that double-forks, a shell
that backgrounds a job) is re-parented to the worker instead of to init, so the
worker can still find it. Descendants are found through ``/proc``, whatever
their session or process group, so one started with ``start_new_session`` is
found too. They are stopped first (a stopped process cannot fork away), then
killed.

What cannot be guaranteed:

* a worker that crashes (rather than being cancelled, timed out or closed)
  cannot clean up: its descendants in its process group are killed by the
  backend, but one that left the group (``start_new_session``, ``setsid``)
  is re-parented to init and goes on;
* a worker blocked holding the GIL in C code notices that its caller died
  (SIGKILL) only when it releases the GIL.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
import time
from typing import Iterable, List, Set

PR_SET_CHILD_SUBREAPER = 36
_REAP_SECONDS = 2.0
_ROUNDS = 20


def become_subreaper() -> bool:
    """Make this process adopt its orphaned descendants. True if it worked."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return int(libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)) == 0
    except (OSError, AttributeError):
        return False


def children(pid: int) -> List[int]:
    """The direct children of ``pid`` (zombies included); [] when it is gone."""
    task_dir = f"/proc/{pid}/task"
    try:
        threads = os.listdir(task_dir)
    except OSError:
        return []
    if not os.path.exists(f"{task_dir}/{threads[0]}/children"):
        return _children_by_scan(pid)  # a kernel without CONFIG_PROC_CHILDREN
    found: List[int] = []
    for thread in threads:
        try:
            with open(f"{task_dir}/{thread}/children", encoding="ascii") as listing:
                found.extend(int(child) for child in listing.read().split())
        except OSError:
            continue  # the thread ended meanwhile
    return found


def has_children() -> bool:
    """Whether this process has a child (running or a zombie; of any of its
    threads), asked without reaping one: a single system call."""
    waitid = getattr(os, "waitid", None)
    if waitid is None:  # pragma: no cover - not POSIX
        return bool(children(os.getpid()))
    try:
        waitid(os.P_ALL, 0, os.WEXITED | os.WNOHANG | os.WNOWAIT)
    except ChildProcessError:
        return False
    return True


def _children_by_scan(pid: int) -> List[int]:
    """Children of ``pid`` found by reading every process's parent (slower)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", encoding="ascii", errors="replace") as stat:
                # The name may hold spaces and parentheses: fields follow its last ")".
                fields = stat.read().rpartition(")")[2].split()
        except OSError:
            continue
        if len(fields) > 1 and fields[1] == str(pid):
            found.append(int(entry))
    return found


def descendants(pid: int) -> List[int]:
    """Every descendant of ``pid``, parents before their children."""
    found: List[int] = []
    queue = [pid]
    seen: Set[int] = {pid}
    while queue:
        for child in children(queue.pop(0)):
            if child not in seen:
                seen.add(child)
                found.append(child)
                queue.append(child)
    return found


def _signal_all(pids: Iterable[int], signum: int) -> None:
    for pid in pids:
        try:
            os.kill(pid, signum)
        except (ProcessLookupError, PermissionError):
            pass


def kill_descendants(pid: int) -> List[int]:
    """Stop, then kill, every descendant of ``pid`` (not ``pid`` itself).

    Descendants are stopped as they are found, and the tree is read again until
    no new one appears, so that none can fork away while it is being killed.

    Returns:
        The pids that were killed.
    """
    stopped: List[int] = []
    for _ in range(_ROUNDS):
        new = [child for child in descendants(pid) if child not in stopped]
        if not new:
            break
        _signal_all(new, signal.SIGSTOP)
        stopped.extend(new)
    _signal_all(stopped, signal.SIGKILL)
    return stopped


def kill_tree(pid: int) -> None:
    """Stop ``pid``, kill all its descendants, then kill ``pid``."""
    _signal_all([pid], signal.SIGSTOP)
    kill_descendants(pid)
    _signal_all([pid], signal.SIGKILL)


def end_leftovers() -> None:
    """In a worker, once a run has ended: kill what the run started and left
    running, and reap it (the worker, as subreaper, is its parent by now).
    Costs one ``waitid`` call when nothing is left."""
    if not has_children():
        return
    me = os.getpid()
    if not children(me):
        return
    kill_descendants(me)
    deadline = time.monotonic() + _REAP_SECONDS
    while time.monotonic() < deadline:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return  # nothing left to reap
        if pid == 0:
            time.sleep(0.005)  # killed, not yet gone


__all__ = ["become_subreaper", "children", "has_children", "descendants", "end_leftovers", "kill_descendants", "kill_tree"]
