"""Runs last (after test_zz_leaks.py): no process the suite started is left. It fails with the
pid, the command line and the test of every process that outlived the test that started it
(each was ended when that test's teardown found it), and of every process started during the
session that is alive now (ended as well), so a session-scoped fixture must not hold a process
(none does). How they are found: procs.py. The session-finish hook in conftest.py does the same
after the session's fixtures are torn down, for runs of a few files that leave this test out."""

from __future__ import annotations

import pytest

import procs


def test_no_process_the_suite_started_is_left():
    left = procs.unreported()
    if left:
        pytest.fail(procs.report(left), pytrace=False)
    # Orphaned grandchildren stay in the tree the check reads only when pytest reaps them.
    assert procs.SUBREAPER, "prctl(PR_SET_CHILD_SUBREAPER) failed: orphaned descendants would escape the check"
