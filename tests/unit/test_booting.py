"""The machine id of a booted sandbox: stable per sandbox and instance, a valid id128."""

from __future__ import annotations

import re

from sandman import booting


def test_the_machine_id_is_stable_per_sandbox_and_instance() -> None:
    first = booting.machine_id("web", "abc123")
    assert first == booting.machine_id("web", "abc123")
    assert first != booting.machine_id("web", "other")
    assert first != booting.machine_id("db", "abc123")


def test_the_machine_id_is_what_machine_id_5_takes_and_a_v4_uuid() -> None:
    machine = booting.machine_id("web", "abc123")
    assert re.fullmatch(r"[0-9a-f]{32}", machine)
    assert machine != "0" * 32
    uuid = booting.uuid_text(machine)
    assert re.fullmatch(
        r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}", uuid
    )
    assert uuid.replace("-", "") == machine
