"""The one place a sandbox's confinement is derived from its unit: apply's init and every
command `exec` runs in it take what this makes, from the same typed record of the unit
(observe/records.py), so the two can never drift apart."""

from __future__ import annotations

from collections.abc import Mapping

from sandman import booting
from sandman.capabilities import PRESETS
from sandman.kernel import security
from sandman.kernel.seccomp import Seccomp
from sandman.observe.facts import SandboxDeclared


def confinement_of(
    declared: SandboxDeclared,
    user: str | None = None,
    environment: Mapping[str, str] | None = None,
) -> security.Confinement:
    """The identity and the limits of the sandbox's processes. `user` and `environment`, when
    given, are those the running init took (its record's runtime facts), which an exec keeps
    whatever the unit says since."""
    uid, gid = (int(x) for x in (user or declared.user).split(":"))
    capabilities = declared.capabilities
    kept = PRESETS[capabilities] if isinstance(capabilities, str) else capabilities
    seccomp = Seccomp(declared.seccomp, declared.syscalls_allow, declared.syscalls_deny)
    before_user, after_user = security.steps(seccomp, kept, declared.no_new_privileges)
    defaults = {
        "PATH": security.DEFAULT_PATH,
        "HOME": "/root" if uid == 0 else "/",
        "container": booting.CONTAINER_MANAGER,
    }
    if declared.machine_id is not None:
        # A booted init (systemd) takes its machine id from here when the image has none.
        defaults["container_uuid"] = booting.uuid_text(declared.machine_id)
    return security.Confinement(
        uid=uid,
        gid=gid,
        working_directory=declared.working_directory,
        environment={**defaults, **(declared.environment if environment is None else environment)},
        setup_inside=before_user,
        finish_inside=after_user,
    )
