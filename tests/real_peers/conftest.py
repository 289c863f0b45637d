"""Fixtures for tests against real headscale / tailscaled processes.

Requires $TAILJOIN_PEERS_BIN (see peers.peers_bin); a missing value fails the
test with instructions instead of skipping it.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

import peers  # noqa: E402
from leaks import ArgvWatcher  # noqa: E402


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
    for ts in reversed(made):
        ts.stop()
