"""The name files of a booted sandbox without a network (#19): its own /etc/hosts, and the
host's resolv.conf as it is (nspawn's --resolv-conf=auto on the host's network)."""

from __future__ import annotations

from pathlib import Path

from sandman.apply import name_files


def test_a_booted_sandboxs_hosts_name_localhost_and_its_hostname() -> None:
    lines = name_files.own_hosts_text("lonely").splitlines()
    assert lines[0] == "127.0.0.1\tlocalhost"
    assert "127.0.1.1\tlonely" in lines


def test_the_hosts_resolv_conf_is_copied_as_it_is() -> None:
    host = Path("/etc/resolv.conf")
    expected = host.read_text() if host.exists() else "# the host has no /etc/resolv.conf\n"
    assert name_files.host_resolv_text() == expected
