"""`sandman shell NAME [USER]`: a login shell in a terminal of the sandbox, as `machinectl shell`.

It is `exec -t` (commands/exec.enter, the same sealed, confined way in) with the command chosen
from the sandbox's own /etc/passwd: USER's shell (the sandbox's user by default), started as a
login shell the way login(1) starts one, argv[0] "-" + its name, in USER's home, with HOME, USER,
LOGNAME and SHELL set over the unit's environment. A shell the sandbox lacks falls back to
/bin/sh. The passwd file is read from the host without following the sandbox out of its root
(kernel/inside_files.py). No `login` verb: a login prompt needs a getty and a booted OS inside.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from collections.abc import Callable
from typing import NamedTuple

from sandman.commands.exec import enter
from sandman.errors import UsageError
from sandman.kernel import inside_files
from sandman.kernel.enter import EnterSpec
from sandman.observe.facts import Record

FALLBACK_SHELL = "/bin/sh"


class Account(NamedTuple):
    """A line of /etc/passwd, or what stands for a uid it lacks."""

    name: str
    uid: int
    gid: int
    home: str
    shell: str


def run(args: argparse.Namespace) -> int:
    return enter(args, lambda record, spec: _login(record, spec, args.user), tty=True)


def _login(record: Record, spec: EnterSpec, user: str | None) -> EnterSpec:
    pid = record.runtime.pid
    text = inside_files.read(pid, "/etc/passwd") or b""
    confinement = spec.confinement
    account = account_for(parse_passwd(text.decode(errors="replace")), user, confinement.uid)
    if user is None:  # the sandbox's own identity: its group as the unit says, not passwd's
        account = account._replace(gid=confinement.gid)

    def exists(path: str, kind: str) -> bool:
        return path.startswith("/") and inside_files.kind(pid, path) == kind

    shell = choose_shell(account.shell, lambda path: exists(path, "file"))
    if shell != account.shell:
        print(
            f"sandman: {account.shell or 'no shell'} in the sandbox's /etc/passwd for "
            f"{account.name}; running {shell}",
            file=sys.stderr,
        )
    home = account.home if exists(account.home, "directory") else "/"
    return login_spec(spec, account._replace(shell=shell, home=home))


def parse_passwd(text: str) -> list[Account]:
    """The well-formed lines of a passwd file (name:password:uid:gid:gecos:home:shell)."""
    found = []
    for line in text.splitlines():
        fields = line.split(":")
        if len(fields) != 7 or not (fields[2].isdigit() and fields[3].isdigit()):
            continue
        name, _, uid, gid, _, home, shell = fields
        found.append(Account(name, int(uid), int(gid), home or "/", shell))
    return found


def account_for(accounts: list[Account], user: str | None, default_uid: int) -> Account:
    """USER's account: by name, or by uid when it is a number (one passwd lacks stands alone:
    its own group, home /, no shell); without USER, the sandbox's user's."""
    if user is None or user.isdigit():
        uid = default_uid if user is None else int(user)
        by_uid = next((a for a in accounts if a.uid == uid), None)
        return by_uid or Account(str(uid), uid, uid, "/", "")
    by_name = next((a for a in accounts if a.name == user), None)
    if by_name is None:
        raise UsageError(
            f"no user {user!r} in the sandbox's /etc/passwd; give a name it lists or a uid"
        )
    return by_name


def choose_shell(shell: str, is_file: Callable[[str], bool]) -> str:
    """The account's shell when the sandbox has it, else /bin/sh."""
    return shell if shell and is_file(shell) else FALLBACK_SHELL


def login_spec(spec: EnterSpec, account: Account) -> EnterSpec:
    """exec's spec turned into a login shell of `account`."""
    environment = {
        **spec.confinement.environment,
        "HOME": account.home,
        "USER": account.name,
        "LOGNAME": account.name,
        "SHELL": account.shell,
    }
    confinement = spec.confinement._replace(
        uid=account.uid,
        gid=account.gid,
        working_directory=account.home,
        environment=environment,
    )
    return dataclasses.replace(
        spec,
        command=(account.shell,),
        argv0="-" + os.path.basename(account.shell),
        confinement=confinement,
    )
