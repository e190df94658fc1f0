"""The human forms of `status` and `show` that need no host: the pressure line of `show`."""

from __future__ import annotations

from sandman.commands.show import pressure_text
from sandman.kernel.cgroup import PRESSURE_KEYS


def test_pressure_text_shows_some_and_full() -> None:
    pressure = {
        "cpu_some_avg10": 12.5,
        "memory_some_avg10": 0.0,
        "memory_full_avg10": 0.0,
        "io_some_avg10": 1.2,
        "io_full_avg10": 0.8,
    }
    assert set(pressure) == set(PRESSURE_KEYS)
    assert pressure_text(pressure) == (
        "cpu 12.50%, memory 0.00% (full 0.00%), io 1.20% (full 0.80%) over 10 s"
    )


def test_pressure_text_says_when_the_host_keeps_none() -> None:
    assert pressure_text(dict.fromkeys(PRESSURE_KEYS)).startswith("not kept by this host")
    assert pressure_text({}) == "-"  # not running: nothing read, as for usage


def test_pressure_text_of_a_partial_reading() -> None:
    pressure = dict.fromkeys(PRESSURE_KEYS) | {"cpu_some_avg10": 3.0}
    assert pressure_text(pressure) == "cpu 3.00%, memory -, io - over 10 s"
