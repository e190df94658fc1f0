"""`run`: create, start and (without --detach) wait for the init and delete the container,
exiting with its status. The runtime made itself a subreaper before `create`, so the init,
orphaned by spawn's first child, is reparented to it and can be waited for."""

from __future__ import annotations

import os

from sandman.kernel import syscalls as sc
from sandman.oci import verbs
from sandman.oci.state import Store


def become_subreaper() -> None:
    sc.prctl(sc.PR_SET_CHILD_SUBREAPER, 1)


def run(store: Store, container_id: str, detach: bool) -> int:
    verbs.start(store, container_id)
    if detach:
        return 0
    pid = store.load(container_id).pid
    _, status = os.waitpid(pid, 0)
    verbs.delete(store, container_id, force=True)
    return os.waitstatus_to_exitcode(status) if os.WIFEXITED(status) else 128 + os.WTERMSIG(status)
