"""The OCI runtime-tools validation suite (shared/oci/runtime-tools-408c51e.tar.gz, the newest
commit Debian's Go builds) against sandman-oci: built in the test, each validation file run
alone with yath in a private mount namespace (a run leaks its bundles' proc, sys and dev mounts
into the caller's namespace otherwise).

PASS_WITH_RUNC is shared/oci/README.md's list of the files runc 1.1.5 passes on this machine;
every one of them must pass with sandman-oci."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

pytestmark = pytest.mark.root

TARBALL = "runtime-tools-408c51e.tar.gz"


def _suite_tarball() -> Path:
    """SANDMAN_OCI_SHARED/TARBALL, else the project's shared material: `shared/oci` beside the
    checkout or beside one of the directories holding it (a clone may sit deeper)."""
    named = os.environ.get("SANDMAN_OCI_SHARED")
    if named:
        return Path(named) / TARBALL
    checkout = Path(__file__).resolve().parents[2]
    for directory in checkout.parents:
        if (directory / "shared" / "oci" / TARBALL).is_file():
            return directory / "shared" / "oci" / TARBALL
    return checkout.parent / "shared" / "oci" / TARBALL


SUITE = _suite_tarball()
BUILD_LIMIT = 900.0  # guards against hanging, never assertions about speed
FILE_LIMIT = 300.0

PASS_WITH_RUNC = (
    "config_updates_without_affect",
    "create",
    "default",
    "delete_only_create_resources",
    "delete_resources",
    "hooks",
    "hostname",
    "kill",
    "kill_no_effect",
    "linux_cgroups_cpus",
    "linux_cgroups_pids",
    "linux_cgroups_relative_cpus",
    "linux_cgroups_relative_pids",
    "linux_devices",
    "linux_masked_paths",
    "linux_ns_itype",
    "linux_ns_nopath",
    "linux_ns_path",
    "linux_ns_path_type",
    "linux_readonly_paths",
    "linux_sysctl",
    "linux_uid_mappings",
    "mounts",
    "poststart",
    "poststart_fail",
    "poststop",
    "poststop_fail",
    "prestart",
    "prestart_fail",
    "process",
    "process_oom_score_adj",
    "process_user",
    "root_readonly_true",
    "state",
)
# Files that print two TAP plans (a test function each), which yath refuses as "Too many plans"
# whatever the runtime (runc too); run alone, as the README of shared/oci counts runc's passes,
# and judged on their TAP: every plan's assertions present and none `not ok` (their exit code is
# 0 even then).
TWO_PLANS = {"linux_cgroups_cpus"}


@pytest.fixture(scope="module")
def suite(tmp_path_factory: pytest.TempPathFactory) -> Path:
    for tool in ("go", "yath", "make", "unshare"):
        if shutil.which(tool) is None:
            pytest.fail(f"{tool} is not installed: contrib/setup.sh --test installs it")
    base = tmp_path_factory.mktemp("runtime-tools")
    if not SUITE.is_file():
        pytest.fail(
            f"{SUITE} is missing: the project's shared/oci holds it (beside the checkout, or "
            "where SANDMAN_OCI_SHARED names)"
        )
    with tarfile.open(SUITE) as archive:
        archive.extractall(base, filter="data")
    tree = base / "runtime-tools"
    env = {**os.environ, "GOFLAGS": "-mod=vendor", "GOCACHE": str(base / "gocache")}
    subprocess.run(
        ["make", "runtimetest", "tool", "validation-executables"],
        cwd=tree,
        env=env,
        check=True,
        capture_output=True,
        timeout=BUILD_LIMIT,
    )
    return tree


@pytest.mark.parametrize("name", PASS_WITH_RUNC)
def test_validation_file_runc_passes_passes(suite: Path, name: str) -> None:
    runtime = Path(sys.executable).with_name("sandman-oci")
    command = ["unshare", "-m", "--propagation", "private"]
    if name not in TWO_PLANS:
        command += ["yath", "test", "-j1", "--no-color"]
    done = subprocess.run(
        [*command, f"validation/{name}/{name}.t"],
        cwd=suite,
        env={**os.environ, "RUNTIME": str(runtime)},
        capture_output=True,
        text=True,
        timeout=FILE_LIMIT,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    if name in TWO_PLANS:
        assert _tap_failures(done.stdout) == [], done.stdout[-4000:] + done.stderr[-2000:]


def _tap_failures(tap: str) -> list[str]:
    """What is wrong in TAP output: `not ok` lines, and assertions missing from the plans."""
    lines = tap.splitlines()
    failures = [line for line in lines if line.startswith("not ok")]
    planned = sum(int(line[3:]) for line in lines if line.startswith("1.."))
    passed = sum(1 for line in lines if line.startswith("ok"))
    if passed != planned:
        failures.append(f"{passed} assertions passed of {planned} planned")
    return failures
