"""`sandman shell`'s choices, from a sandbox's /etc/passwd: which account, which shell, and the
exec spec that makes it a login shell."""

from __future__ import annotations

import pytest

from sandman.commands.shell import account_for, choose_shell, login_spec, parse_passwd
from sandman.errors import UsageError
from sandman.kernel.enter import EnterSpec
from sandman.kernel.security import Confinement

PASSWD = """root:x:0:0:root:/root:/bin/ash
# a comment, and lines that are no account
broken:line
daemon:x:1:one:daemon:/usr/sbin:/usr/sbin/nologin
alice:x:1000:1001:Alice:/home/alice:/bin/bash
nohome:x:1002:1002:::
"""


def test_parse_passwd_keeps_the_well_formed_lines() -> None:
    names = [a.name for a in parse_passwd(PASSWD)]
    assert names == ["root", "alice", "nohome"]
    nohome = parse_passwd(PASSWD)[-1]
    assert (nohome.home, nohome.shell) == ("/", "")


def test_the_sandboxs_user_by_default_a_name_or_a_uid_otherwise() -> None:
    accounts = parse_passwd(PASSWD)
    assert account_for(accounts, None, 1000).name == "alice"
    assert account_for(accounts, "alice", 0).uid == 1000
    assert account_for(accounts, "0", 1000).name == "root"
    lone = account_for(accounts, "4242", 0)
    assert (lone.name, lone.uid, lone.gid, lone.home, lone.shell) == ("4242", 4242, 4242, "/", "")
    with pytest.raises(UsageError, match="no user 'mallory'"):
        account_for(accounts, "mallory", 0)


def test_a_shell_the_sandbox_lacks_falls_back_to_bin_sh() -> None:
    assert choose_shell("/bin/bash", lambda path: path == "/bin/bash") == "/bin/bash"
    assert choose_shell("/bin/bash", lambda path: False) == "/bin/sh"
    assert choose_shell("", lambda path: True) == "/bin/sh"


def test_the_login_spec_is_execs_with_a_login_shells_argv0_identity_and_home() -> None:
    confinement = Confinement(uid=0, gid=0, environment={"PATH": "/bin", "APP": "1", "HOME": "/"})
    spec = EnterSpec(pid=42, command=(), confinement=confinement, term="xterm")
    alice = parse_passwd(PASSWD)[1]
    login = login_spec(spec, alice)
    assert (login.command, login.argv0, login.pid, login.term) == (
        ("/bin/bash",),
        "-bash",
        42,
        "xterm",
    )
    taken = login.confinement
    assert (taken.uid, taken.gid, taken.working_directory) == (1000, 1001, "/home/alice")
    assert taken.environment == {
        "PATH": "/bin",
        "APP": "1",
        "HOME": "/home/alice",
        "USER": "alice",
        "LOGNAME": "alice",
        "SHELL": "/bin/bash",
    }
