"""No traceback reaches a user: the host refusing sandman something (here, capabilities taken
away with setpriv) is one line on stderr and exit 1, on every verb that touches the host.

Driven as a user does, through `python -m sandman` under `setpriv --bounding-set`, with the
private instance of test_sandboxes.py.
"""

from __future__ import annotations

import json
import subprocess

import pytest
import test_sandboxes as base
from test_sandboxes import Sandman, sm

pytestmark = pytest.mark.root

busybox_image = base.busybox_image
__all__ = ["busybox_image", "sm"]  # fixtures, used by name

DROPPED = ("setpriv", "--bounding-set", "-net_admin,-sys_admin", "--inh-caps", "-all")


def run_without_caps(sm: Sandman, verb: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*DROPPED, *sm.argv(verb, *args)],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.mark.parametrize(
    "verb", [("plan",), ("apply",), ("plan", "--json"), ("destroy",), ("status",)]
)
def test_a_refused_capability_is_one_line_and_exit_1(sm: Sandman, verb: tuple[str, ...]) -> None:
    sm.write("net", '[network]\nsubnet = "10.203.77.0/24"\n', kind="network")
    sm.write("web", base.unit(rest='[network]\nattach = "net"\n'))
    done = run_without_caps(
        sm, verb[0], *([str(sm.units)] if verb[0] != "status" else []), *verb[1:]
    )
    assert "Traceback" not in done.stderr, done.stderr
    if verb[0] == "status" and done.returncode == 0:
        return  # nothing applied: status reads only the state dir, which it may
    assert done.returncode == 1, done
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("sandman: "), done.stderr
    if "--json" in verb:
        assert json.loads(done.stdout)["error"]["message"]


@pytest.mark.parametrize("verb", ["stop", "start", "restart"])
def test_stop_start_and_restart_refused_a_capability_change_nothing(sm: Sandman, verb: str) -> None:
    sm.write("net", '[network]\nsubnet = "10.203.79.0/24"\n', kind="network")
    sm.write("web", base.unit(rest='[network]\nattach = "net"\n'))
    sm.apply()
    init = sm.init("web")
    done = run_without_caps(sm, verb, "web", "--json")
    assert "Traceback" not in done.stderr, done.stderr
    assert done.returncode == 1, done
    assert done.stderr.count("\n") == 1 and done.stderr.startswith("sandman: "), done.stderr
    assert json.loads(done.stdout)["error"]["message"]
    assert sm.init("web") == init and base.alive(*init)
    assert not sm.record("web")["stopped"]
