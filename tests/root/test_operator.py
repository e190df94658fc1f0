"""What an operator types, refused when it would do something other than what they meant
(issue #17): nothing on the host changes, the exit code is 2, and the message names the object.

Driven through the command line on the `lab` of test_networks.py (a private instance and subnet,
checked clean afterwards).
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys

import pytest
import test_networks as networks
import test_sandboxes as base
from pyroute2 import IPRoute
from test_networks import Lab, lab, network_unit, sandbox_unit
from test_sandboxes import Sandman, sm, unit, wait_for

pytestmark = pytest.mark.root

busybox_image = base.busybox_image
__all__ = ["busybox_image", "lab", "sm"]  # fixtures, used by name


def applied_world(lab: Lab) -> dict[str, tuple[int, int]]:
    lab.sm.write("lan", network_unit(lab.subnet), kind="network")
    for name in ("a", "b"):
        lab.sm.write(name, sandbox_unit("lan"))
    lab.sm.apply()
    return {name: lab.sm.init(name) for name in ("a", "b")}


def test_destroy_of_a_name_nothing_carries_is_refused(lab: Lab) -> None:
    inits = applied_world(lab)
    result = lab.sm.run("destroy", "a", "nope", expect=2)
    assert "sandbox/nope: nothing by that name is applied" in result.err, result
    assert {name: lab.sm.running_init(name) for name in inits} == {
        n: p for n, (p, _) in inits.items()
    }
    assert lab.sm.init("a") == inits["a"]


def test_destroy_of_a_network_sandboxes_still_use_is_refused_then_done_with_them(lab: Lab) -> None:
    inits = applied_world(lab)
    result = lab.sm.run("destroy", "network/lan", "a", expect=2)
    assert "network/lan: sandbox/b still use it" in result.err, result
    assert {name: lab.sm.init(name) for name in inits} == inits
    assert lab.sm.record_path("lan", "networks").exists()
    done = lab.sm.run("destroy", "network/lan", "a", "b")
    assert "Destroy complete: 3 destroyed." in done.out, done
    assert networks.host_links(lab.bridge("lan")) == []


def test_plan_and_apply_target_of_an_unknown_name_are_refused(lab: Lab) -> None:
    inits = applied_world(lab)
    for verb in ("plan", "apply"):
        result = lab.sm.run(verb, str(lab.sm.units), "--target", "c", expect=2)
        assert "--target c: no sandbox/c is declared" in result.err, result
    assert {name: lab.sm.init(name) for name in inits} == inits


def test_apply_takes_prune_which_is_the_default(lab: Lab) -> None:
    applied_world(lab)
    lab.sm.remove("b")
    result = lab.sm.run("apply", str(lab.sm.units), "--prune")
    assert "- sandbox/b: destroy (unit removed)" in result.err + result.out, result
    assert lab.sm.gone("b") == []


def test_removing_an_image_applied_sandboxes_run_on_is_refused_unless_forced(sm: Sandman) -> None:
    sm.write("user", unit())
    sm.apply()
    init = sm.init("user")
    refused = remove_image(sm, "busybox")
    assert refused.returncode == 1, refused
    assert "in use by sandbox/user" in refused.stderr and "--force" in refused.stderr, refused
    assert (sm.image_dir / "busybox" / "bin" / "busybox").exists()
    assert sm.init("user") == init
    assert sm.exec("user", "ls", "/bin/sh").code == 0
    sm.destroy("user")
    assert remove_image(sm, "busybox").returncode == 0
    assert not (sm.image_dir / "busybox").exists()


def remove_image(sm: Sandman, name: str) -> subprocess.CompletedProcess[str]:
    paths = ("--state-dir", str(sm.state_dir), "--image-dir", str(sm.image_dir))
    argv = [sys.executable, "-m", "sandman", "image", "remove", name, *paths]
    return subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)


def test_a_forward_onto_a_port_a_host_service_listens_on_is_refused_before_anything(
    lab: Lab,
) -> None:
    applied_world(lab)
    inits = {name: lab.sm.init(name) for name in ("a", "b")}
    with socket.create_server(("127.0.0.1", 0)) as service:
        port = service.getsockname()[1]
        forward = [{"host": port, "sandbox": 80, "host_address": "127.0.0.1"}]
        lab.sm.write("b", sandbox_unit("lan", ports=forward))
        result = lab.sm.run("apply", str(lab.sm.units), expect=2)
    assert "b.sandbox.toml: network.ports[0].host: tcp port" in result.err, result
    assert f"already served on the host (127.0.0.1:{port})" in result.err, result
    assert {name: lab.sm.init(name) for name in ("a", "b")} == inits


def test_a_subnet_the_host_already_uses_is_refused_before_anything(lab: Lab) -> None:
    link = f"{lab.prefix}-taken"
    with IPRoute() as ipr:
        ipr.link("add", ifname=link, kind="bridge")  # no dummy module on every kernel
        index = ipr.link_lookup(ifname=link)[0]
        ipr.addr("add", index=index, address=str(lab.subnet2[1]), prefixlen=24)
    try:
        lab.sm.write("other", network_unit(lab.subnet2), kind="network")
        result = lab.sm.run("plan", str(lab.sm.units), expect=2)
        assert f"other.network.toml: network.subnet: {lab.subnet2} overlaps" in result.err
        assert link in result.err, result
        lab.sm.run("apply", str(lab.sm.units), expect=2)
        assert not lab.sm.record_path("other", "networks").exists()
    finally:
        with IPRoute() as ipr:
            ipr.link("del", ifname=link)


def test_a_persistent_sandbox_keeps_its_id_range_across_destroy_though_another_came(
    sm: Sandman,
) -> None:
    """Its files belong to its automatic range: a sandbox applied while it was destroyed must
    not take that range, and it must get it back (#17: the data stayed readable)."""
    sm.write("keeper", unit(rest='[rootfs]\nimage = "busybox"\npersistent = true\n'))
    sm.apply()
    sm.sh("keeper", "echo kept > /root/note && chmod 600 /root/note")
    first = sm.runtime("keeper")["auto_ids"]
    sm.destroy("keeper")
    sm.remove("keeper")
    sm.write("newcomer", unit())
    sm.apply()
    assert sm.runtime("newcomer")["auto_ids"] != first
    sm.write("keeper", unit(rest='[rootfs]\nimage = "busybox"\npersistent = true\n'))
    sm.apply()
    assert sm.runtime("keeper")["auto_ids"] == first
    assert sm.run("exec", "keeper", "--", "cat", "/root/note").out == "kept\n"


def test_show_tells_one_sandbox_in_full(sm: Sandman) -> None:
    sm.write(
        "shown",
        unit(
            command=("sh", "-c", "echo hello from shown; sleep 1000 & wait"),
            sandbox='description = "shown in full"',
            rest='[resources]\nmemory_max = "64M"\n',
        ),
    )
    sm.apply()
    init = sm.running_init("shown")
    wait_for(lambda: "hello" in (sm.log_dir / "shown.log").read_text(), "the log line")
    report = json.loads(sm.run("show", "shown", "--json").out)
    assert report["description"] == "shown in full"
    assert report["pid"] == init and report["state"] == "running"
    assert report["limits"]["memory_max"] == 64 * 1024 * 1024
    assert report["cgroup"].endswith("/shown")
    commands = {p["pid"]: p["command"] for p in report["processes"]}
    assert commands[init].startswith("sh -c") and "sleep 1000" in commands.values()
    assert report["log_tail"] == ["hello from shown"]
    text = sm.run("show", "shown").out
    assert text.startswith("shown - shown in full\n")
    assert f"pid {init}" in text and "memory_max 64M" in text and "hello from shown" in text
    assert "no sandbox 'other' is applied" in sm.run("show", "other", expect=2).err
    assert sm.status_of("shown")["description"] == "shown in full"
    header, row = sm.run("status").out.splitlines()[:2]
    assert header.split()[4:] == ["SLICE", "ADDRESS", "MEMORY", "IMAGE", "RESTARTS", "PORTS"]
    assert row.split()[4] == sm.base  # the slice's real cgroup: the instance's base


def test_a_limit_the_kernel_refuses_names_the_unit_file_and_key(sm: Sandman) -> None:
    """A live update of memory_max below what the sandbox uses (16M of /dev/shm, which no
    reclaim frees on a host without swap): the kernel says EBUSY, and the error says which file
    and key it came from; the init keeps running. (A limit below what any sandbox needs to
    start is a unit error: bad_units/limits-below-floor.)"""
    fill = ("sh", "-c", "head -c 16777216 /dev/zero > /dev/shm/fill && exec sleep 1000")
    sm.write("big", unit(command=fill, rest='[resources]\nmemory_max = "64M"\n'))
    sm.apply()
    init = sm.init("big")
    wait_for(lambda: sm.sh("big", "wc -c < /dev/shm/fill").out.strip() == "16777216", "the fill")
    sm.write("big", unit(command=fill, rest='[resources]\nmemory_max = "8M"\n'))
    failed = sm.apply(expect=1)
    assert "big.sandbox.toml: resources.memory_max:" in failed.err, failed
    assert "the kernel refused memory_max" in failed.err, failed
    assert sm.init("big") == init and sm.running_init("big")


def test_a_recreate_whose_new_sandbox_cannot_start_brings_the_old_one_back(lab: Lab) -> None:
    """A change only the create can find wrong (the working directory is not in the image): the
    old sandbox was already stopped for it, so apply starts it again from its record, on its
    network with its address, and still fails naming the key."""
    lab.sm.write("lan", network_unit(lab.subnet), kind="network")
    lab.sm.write("web", sandbox_unit("lan"))
    lab.sm.apply()
    before = lab.sm.init("web")
    address = lab.sm.status_of("web")["network"]["address"]
    lab.sm.note_records()
    lab.sm.write("web", sandbox_unit("lan", sandbox='working_directory = "/no/such/dir"'))
    failed = lab.sm.apply(expect=1)
    assert "web.sandbox.toml: sandbox.working_directory" in failed.err, failed
    assert "sandbox/web: the change failed; the sandbox runs its previous unit" in failed.err
    lab.sm.note_records()
    after = lab.sm.running_init("web")
    assert after != before[0]
    status = lab.sm.status_of("web")
    assert status["state"] == "running" and status["network"]["address"] == address
    assert lab.sm.exec("web", "pwd").out.strip() == "/"  # the previous unit's
    assert "working_directory" not in json.dumps(lab.sm.record("web")["unit"]["sandbox"]).replace(
        '"working_directory": "/"', ""
    )
    plan = lab.sm.run("plan", str(lab.sm.units)).out
    assert "sandbox/web" in plan and "recreate" in plan, plan  # the change is still to make
