"""Test configuration shared by every test.

Tests marked `root` need root and the real kernel. Off CI they are skipped without root; in CI
(SANDMAN_CI or CI set) a root test that cannot run, or that skips itself, fails the run: a root
test silently skipped in CI would hide exactly the checks that matter.
"""

from __future__ import annotations

import os
import signal

import pytest

IN_CI = bool(os.environ.get("SANDMAN_CI") or os.environ.get("CI"))
_skipped_root_tests: list[str] = []


def pytest_configure(config: pytest.Config) -> None:
    """Tests send SIGINT and SIGHUP to the processes they start, as a terminal would. A run
    started in the background (`cmd &` in a script, nohup) inherits those signals ignored, and
    an ignored signal stays ignored across exec (Python then installs no SIGINT handler at all):
    the processes the tests start get the defaults, however the run was started."""
    signal.signal(signal.SIGHUP, signal.SIG_DFL)
    signal.signal(signal.SIGQUIT, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.default_int_handler)


def pytest_runtest_setup(item: pytest.Item) -> None:
    if item.get_closest_marker("root") is None or os.geteuid() == 0:
        return
    if IN_CI:
        pytest.fail("this test needs root, and CI must run it as root")
    pytest.skip("needs root (CI runs it)")


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    # An expected failure (xfail) ran and failed as its reason says: not a skip.
    expected_failure = hasattr(report, "wasxfail")
    if IN_CI and report.skipped and not expected_failure and "root" in report.keywords:
        _skipped_root_tests.append(report.nodeid)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if _skipped_root_tests:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    for nodeid in _skipped_root_tests:
        terminalreporter.write_line(f"FAILED (root test skipped in CI): {nodeid}", red=True)
