"""The processes the real-peer suite starts, and the check that none outlives its test or the suite.

Every long-running process (headscale, tailscaled, `tailjoin run`, `tailjoin-provisioner`) is
started with spawn() and ended with stop(): SIGTERM (and SIGCONT, so that a SIGSTOPped one can
act on it), a bounded wait, then SIGKILL. Tests get them from fixtures (conftest.py) whose
teardown calls stop() on every path.

The check does not trust that: it reads the process tree under the pytest process from /proc.
The pytest process is made a child subreaper (prctl PR_SET_CHILD_SUBREAPER), so a grandchild
whose parent exits is re-parented to pytest instead of init and stays in that tree. conftest.py
compares the tree before and after each test (teardown included): a process that outlived the
test that started it is recorded in LEFT_BEHIND, ended, and fails that test at teardown. The
last test (test_zz_no_process_left.py) and a session-finish hook then fail the run if any was
recorded, or if any process started during the session is still alive.

Linux only (/proc), like the rest of the suite.
"""

from __future__ import annotations

import atexit
import ctypes
import os
import signal
import subprocess
import time
from dataclasses import dataclass

PR_SET_CHILD_SUBREAPER = 36

# How long a process is given to exit on SIGTERM before SIGKILL, and then to be gone.
TERM_GRACE = 10.0
KILL_GRACE = 10.0


@dataclass(frozen=True)
class Proc:
    pid: int
    start_ticks: int  # /proc/<pid>/stat starttime: with the pid, names one process even if the pid is reused
    cmdline: str

    @property
    def key(self) -> tuple[int, int]:
        return self.pid, self.start_ticks


@dataclass
class Leftover:
    proc: Proc
    test: str  # the test it outlived, or what found it
    reported: bool = False

    def describe(self) -> str:
        return f"pid {self.proc.pid} (left by {self.test}): {self.proc.cmdline}"


# Processes found alive after the test that started them ended (each was then ended).
LEFT_BEHIND: list[Leftover] = []
# The tree under pytest when the session started (normally empty): not the suite's doing.
BASELINE: set[tuple[int, int]] = set()
# Whether this process became the reaper of its orphaned descendants (conftest.py asks at the start).
SUBREAPER = False
# Popen objects from spawn() that have not been stopped yet (for the exit-time safety net).
_LIVE: dict[int, subprocess.Popen] = {}


def become_subreaper() -> bool:
    """Makes this process the reaper of its orphaned descendants, so that they stay in its tree."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def _stat(pid: int) -> tuple[int, str, int] | None:
    """(ppid, state, start ticks) of pid, or None once it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except OSError:
        return None
    fields = data[data.rindex(b")") + 2:].split()  # the command name in parentheses may hold anything
    return int(fields[1]), fields[0].decode(), int(fields[19])


def _cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            argv = f.read().rstrip(b"\0").split(b"\0")
        text = " ".join(a.decode(errors="replace") for a in argv if a)
        if text:
            return text
        with open(f"/proc/{pid}/comm") as f:
            return f"[{f.read().strip()}]"
    except OSError:
        return "[gone]"


def descendants(root: int | None = None) -> dict[tuple[int, int], Proc]:
    """Every live (not zombie) process under root (default: this process), by (pid, start ticks)."""
    root = os.getpid() if root is None else root
    children: dict[int, list[tuple[int, str, int]]] = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        st = _stat(int(name))
        if st is not None:
            children.setdefault(st[0], []).append((int(name), st[1], st[2]))
    found: dict[tuple[int, int], Proc] = {}
    todo = [root]
    while todo:
        for pid, state, ticks in children.get(todo.pop(), []):
            todo.append(pid)
            if state not in ("Z", "X"):
                found[(pid, ticks)] = Proc(pid, ticks, _cmdline(pid))
    return found


def alive(p: Proc) -> bool:
    st = _stat(p.pid)
    return st is not None and st[2] == p.start_ticks and st[1] not in ("Z", "X")


def spawn(argv: list[str], **popen_kwargs) -> subprocess.Popen:
    """subprocess.Popen(argv, **popen_kwargs), remembered until stop() ends it."""
    proc = subprocess.Popen(argv, **popen_kwargs)
    _LIVE[proc.pid] = proc
    return proc


def stop(proc: subprocess.Popen | None, timeout: float = TERM_GRACE) -> int | None:
    """SIGTERM (plus SIGCONT), up to `timeout` seconds to exit, then SIGKILL; returns the exit
    code. Safe on a process that has exited already, or was never started (None)."""
    if proc is None:
        return None
    try:
        if proc.poll() is None:
            for sig in (signal.SIGTERM, signal.SIGCONT):
                try:
                    proc.send_signal(sig)
                except ProcessLookupError:
                    pass
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=KILL_GRACE)
        return proc.returncode
    finally:
        if proc.returncode is not None:
            _LIVE.pop(proc.pid, None)


def stop_all(things) -> None:
    """Calls .stop() on each, last made first; every one is tried even when one fails (the
    first error is raised after)."""
    errors: list[BaseException] = []
    for thing in reversed(list(things)):
        try:
            thing.stop()
        except Exception as e:  # noqa: BLE001 - stop the rest, then raise
            errors.append(e)
    if errors:
        raise errors[0]


def end(found: list[Proc]) -> list[Proc]:
    """Ends processes that are not (or no longer) anyone's job to stop: SIGTERM, a bounded wait,
    SIGKILL. Returns those still alive after all that (in uninterruptible sleep, say)."""
    for p in found:
        popen = _LIVE.get(p.pid)
        if popen is not None and alive(p):
            try:
                stop(popen)
            except subprocess.TimeoutExpired:
                pass
    for sig, grace in ((signal.SIGTERM, TERM_GRACE), (signal.SIGKILL, KILL_GRACE)):
        left = [p for p in found if alive(p)]
        for p in left:
            for s in (sig, signal.SIGCONT):
                try:
                    os.kill(p.pid, s)
                except ProcessLookupError:
                    pass
        deadline = time.monotonic() + grace
        while left and time.monotonic() < deadline:
            for p in left:
                _reap(p.pid)
            left = [p for p in left if alive(p)]
            if left:
                time.sleep(0.05)
    for p in found:
        _reap(p.pid)
    return [p for p in found if alive(p)]


def _reap(pid: int):
    """Collects the exit status of a child of ours (a re-parented orphan, or a leftover)."""
    popen = _LIVE.get(pid)
    try:
        if popen is not None:
            if popen.poll() is not None:
                _LIVE.pop(pid, None)
        else:
            os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


def new_since(before: set[tuple[int, int]], settle: float = 10.0) -> list[Proc]:
    """Processes under this one now that were not in `before`, after giving any that is already
    on its way out up to `settle` seconds to finish (a process just killed takes a moment)."""
    deadline = time.monotonic() + settle
    while True:
        now = [p for k, p in descendants().items() if k not in before]
        if not now or time.monotonic() >= deadline:
            return now
        for p in now:
            _reap(p.pid)
        time.sleep(0.1)


def unreported() -> list[Leftover]:
    """Every process the suite left behind not reported yet: those recorded at a test's teardown,
    and any started during the session that is alive now. Marks them reported and ends the
    live ones."""
    found = [l for l in LEFT_BEHIND if not l.reported]
    known = {l.proc.key for l in LEFT_BEHIND}
    for p in new_since(BASELINE | known, settle=5.0):
        leftover = Leftover(p, "the session: alive at its end")
        LEFT_BEHIND.append(leftover)
        found.append(leftover)
    end([l.proc for l in found])
    for l in found:
        l.reported = True
    return found


def report(leftovers: list[Leftover]) -> str:
    still = [l for l in leftovers if alive(l.proc)]
    text = (f"{len(leftovers)} process(es) the real-peer suite started outlived the test (or fixture) "
            f"that started them; each must stop what it starts (use the fixtures in conftest.py):\n"
            + "\n".join("  " + l.describe() for l in leftovers))
    if still:
        text += "\nstill alive even after SIGKILL: " + ", ".join(str(l.proc.pid) for l in still)
    return text


@atexit.register
def _stop_leftovers():
    """Safety net when the interpreter exits (an interrupted run): no daemon stays behind."""
    for proc in list(_LIVE.values()):
        try:
            stop(proc, timeout=5)
        except Exception:  # noqa: BLE001 - best effort at exit
            pass
