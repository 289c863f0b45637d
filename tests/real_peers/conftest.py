"""Fixtures for tests against real headscale / tailscaled processes.

Requires $TAILJOIN_PEERS_BIN (see peers.peers_bin); a missing value fails the
test with instructions instead of skipping it.

Tests stop what they start: every process (headscale, tailscaled, the agent, the provisioner)
and every in-process server comes from a fixture here (or a context manager a fixture or a
`with` holds) whose teardown stops it, whatever the test did. procs.py checks it: a process that
outlives its test fails that test at teardown, and test_zz_no_process_left.py (plus the
session-finish hook below, for runs of a few files) fails the run if any did.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

import peers  # noqa: E402
import procs  # noqa: E402
from agent import Agent  # noqa: E402
from leaks import ArgvWatcher  # noqa: E402
from provisioner import Provisioner  # noqa: E402
from receiver import Receiver  # noqa: E402


def pytest_sessionstart(session):
    procs.SUBREAPER = procs.become_subreaper()
    procs.BASELINE.update(procs.descendants())


@pytest.hookimpl(trylast=True)  # after the runner's own sessionfinish tore down session fixtures
def pytest_sessionfinish(session, exitstatus):
    """The backstop of test_zz_no_process_left.py, for runs that leave it out: any process the
    session left behind, and not reported yet, fails the run with its pid and command line."""
    left = procs.unreported()
    if not left:
        return
    text = procs.report(left)
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None:
        reporter.write_sep("=", "processes left behind", red=True, bold=True)
        reporter.write_line(text)
    else:
        print(text, file=sys.stderr)
    if session.exitstatus == pytest.ExitCode.OK:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


@pytest.fixture(autouse=True)
def _stops_what_it_starts(request):
    """Set up before (so torn down after) every other fixture of the test: a process under pytest
    that was not there when the test began and is still alive once its teardown is over was left
    behind. It is recorded for the final check, ended, and fails this test."""
    before = set(procs.descendants())
    yield
    left = procs.new_since(before)
    if not left:
        return
    procs.LEFT_BEHIND.extend(procs.Leftover(p, request.node.nodeid) for p in left)
    still = procs.end(left)
    pytest.fail(
        f"{len(left)} process(es) outlived this test (ended now; start them through the fixtures in conftest.py):\n"
        + "\n".join(f"  pid {p.pid}: {p.cmdline}" for p in left)
        + (f"\nstill alive after SIGKILL: {[p.pid for p in still]}" if still else ""),
        pytrace=False,
    )


@pytest.fixture(scope="session", autouse=True)
def argv_watcher():
    """Every process's argv, sampled every 20 ms for the whole session (for the leak tests)."""
    with ArgvWatcher() as w:
        yield w


@pytest.fixture(scope="session")
def peers_bin() -> Path:
    try:
        return peers.peers_bin()
    except peers.PeersBinMissing as e:
        pytest.fail(str(e), pytrace=False)


@pytest.fixture
def headscale(peers_bin, tmp_path):
    """A started headscale with one user; .user_id and .user_name are set."""
    hs = peers.Headscale(tmp_path / "headscale", bin_dir=peers_bin)
    try:
        hs.start()
        hs.user_name = "tester"
        hs.user_id = hs.create_user(hs.user_name)
        yield hs
    finally:
        hs.stop()


@pytest.fixture
def tailscaled_factory(peers_bin, tmp_path):
    """make(name=None, start=True, **kw) -> Tailscaled; all are stopped at teardown."""
    made: list[peers.Tailscaled] = []

    def make(name: str | None = None, start: bool = True, **kw) -> peers.Tailscaled:
        name = name or f"node{len(made) + 1}"
        ts = peers.Tailscaled(tmp_path / f"ts-{name}", name, bin_dir=peers_bin, **kw)
        made.append(ts)
        if start:
            ts.start()
        return ts

    yield make
    procs.stop_all(made)


@pytest.fixture
def agent_factory(tailscaled_factory):
    """make(workdir, tailscaled, login_server, start=True, **kw) -> Agent (agent.Agent's
    arguments); every agent made is stopped at teardown, before the tailscaleds."""
    made: list[Agent] = []

    def make(*args, start: bool = True, **kw) -> Agent:
        a = Agent(*args, **kw)
        made.append(a)
        return a.start() if start else a

    yield make
    procs.stop_all(made)


@pytest.fixture
def provisioner_factory():
    """make(workdir, config, creds, start=True) -> Provisioner; every provisioner made is stopped at
    teardown (a test may stop and start one again meanwhile)."""
    made: list[Provisioner] = []

    def make(workdir: Path, config: dict, creds: Path, start: bool = True) -> Provisioner:
        prov = Provisioner(workdir, config, creds)
        made.append(prov)
        return prov.start() if start else prov

    yield make
    procs.stop_all(made)


@pytest.fixture
def swtpm_factory(tmp_path):
    """make(name) -> a started swtpm with an EK and an AK (tpm_machine.Swtpm); all stopped at
    teardown."""
    from tpm_machine import Swtpm
    started: list[Swtpm] = []

    def make(name: str = "tpm", made_by=None) -> Swtpm:
        t = Swtpm(tmp_path / f"swtpm-{name}", made_by=made_by)
        started.append(t)
        return t.start()

    yield make
    for t in started:
        t.stop()


@pytest.fixture
def receiver_factory():
    """make(workdir, port=None, tls=False, start=True) -> Receiver; all are stopped at teardown."""
    made: list[Receiver] = []

    def make(*args, start: bool = True, **kw) -> Receiver:
        rx = Receiver(*args, **kw)
        made.append(rx)
        return rx.start() if start else rx

    yield make
    procs.stop_all(made)
