"""The parsers behind the unit models' keys (model.py), free of pydantic: the compiled
validators (compiled.py) call them from a schema kept between runs, so each is a module-level
function (or a functools.partial of one) that a kept schema can name by module and name.

Each takes what TOML gave and returns the value the model holds, or raises ValueError saying
what is wrong and what to write instead; the loader adds the file, line and key.
"""

from __future__ import annotations

import ipaddress
from typing import Any

from sandman.capabilities import CAPABILITIES, PRESETS
from sandman.syscall_table import NAMES as SYSCALL_NAMES
from sandman.units import scalars
from sandman.units.constants import BOOT_DEFAULTS, DEFAULT_SHM_SIZE
from sandman.units.scalars import ID_MAX


def parse_string(value: Any, pattern_name: str, check: Any) -> str:
    if not isinstance(value, str):
        raise ValueError(f"{scalars.type_name(value)} is not {pattern_name}; write a string")
    result: str = check(value)
    return result


def hostname(value: Any) -> str:
    def check(text: str) -> str:
        if len(text) > 64 or not scalars.HOSTNAME_RE.fullmatch(text):
            raise ValueError(
                f"{text!r} is not a valid hostname; use letters, digits, '-' and '.', at most 64 "
                "characters"
            )
        return text

    return parse_string(value, "a hostname", check)


def image(value: Any) -> str:
    def check(text: str) -> str:
        if not scalars.IMAGE_RE.fullmatch(text) or len(text) > 64:
            raise ValueError(
                f"{text!r} is not an image name; use lowercase letters, digits, '.', '_' and '-' "
                "(an image is a directory under the image dir; for any other directory use `path`)"
            )
        return text

    return parse_string(value, "an image name", check)


def user(value: Any) -> str:
    def check(text: str) -> str:
        parts = text.split(":")
        # isascii: str.isdigit() also takes "²" and "٣", which int() or the kernel refuse.
        numeric = all(p.isascii() and p.isdigit() for p in parts)
        if len(parts) > 2 or not numeric or not all(int(p) <= ID_MAX for p in parts):
            raise ValueError(
                f'{text!r} is not a user; write "UID:GID" with numbers, e.g. "1000:1000"'
            )
        uid = parts[0]
        gid = parts[1] if len(parts) == 2 else parts[0]
        return f"{int(uid)}:{int(gid)}"

    return parse_string(value, "a user", check)


def ifname(value: Any) -> str:
    def check(text: str) -> str:
        if len(text) > scalars.IFNAME_MAX and scalars.IFNAME_RE.fullmatch(text):
            raise ValueError(
                f"{text!r} is {len(text)} characters long; the kernel takes interface names of "
                f"at most {scalars.IFNAME_MAX}"
            )
        if len(text) > scalars.IFNAME_MAX or not scalars.IFNAME_RE.fullmatch(text):
            raise ValueError(
                f"{text!r} is not a valid interface name; use at most {scalars.IFNAME_MAX} "
                "letters, digits, '-', '_' or '.'"
            )
        return text

    return parse_string(value, "an interface name", check)


def env_name(value: Any) -> str:
    def check(text: str) -> str:
        if not scalars.ENV_NAME_RE.fullmatch(text):
            raise ValueError(
                f"{text!r} is not an environment variable name; use letters, digits and '_', "
                "not starting with a digit"
            )
        return text

    return parse_string(value, "a variable name", check)


def no_nul(value: Any) -> Any:
    if isinstance(value, str) and "\0" in value:
        raise ValueError(
            "the string holds a NUL byte, which no command line or environment can carry"
        )
    return value


def ip_address(kind: type, auto: bool, what: str, example: str, value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError(
            f"{scalars.type_name(value)} is not {what}; write a string, e.g. {example!r}"
        )
    if auto and value == "auto":
        return value
    try:
        kind(value)
        # Kept as written: "10.88.0.10" without a prefix takes its network's prefix later.
        return value.strip()
    except ValueError as exc:
        choices = f'{example!r} or "auto"' if auto else repr(example)
        raise ValueError(f"{value!r} is not {what} ({exc}); write e.g. {choices}") from None


def subnet(kind: type, example: str, other_key: str, value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError(f"{scalars.type_name(value)} is not a subnet; write e.g. {example!r}")
    try:
        return str(kind(value, strict=True))
    except ValueError as exc:
        try:
            fixed = kind(value, strict=False)
        except ValueError:
            other_family(value, kind, example, other_key)
            raise ValueError(f"{value!r} is not a subnet ({exc}); write e.g. {example!r}") from None
        raise ValueError(
            f"{value!r} has host bits set; write the network address, {str(fixed)!r}"
        ) from None


def other_family(value: str, kind: type, example: str, other_key: str) -> None:
    """A subnet of the other IP version is a key mix-up, not a typo: say where it belongs."""
    try:
        version = ipaddress.ip_network(value, strict=False).version
    except ValueError:
        return
    if version != kind(example).version:
        raise ValueError(
            f"{value!r} is an IPv{version} subnet; write an IPv{kind(example).version} one here, "
            f"e.g. {example!r}, and IPv{version} in {other_key}"
        )


def file_mode(value: Any) -> int:
    if scalars.is_int(value) and 0 <= value <= 0o7777:
        return int(value)
    if (
        isinstance(value, str)
        and value.isdigit()
        and set(value) <= set("01234567")
        and len(value) <= 4
    ):
        return int(value, 8)
    shown = repr(value) if isinstance(value, str) or scalars.is_int(value) else None
    raise ValueError(
        f"{shown or scalars.type_name(value)} is not a file mode; write octal digits, e.g. "
        '"1777" or 0o755'
    )


def capabilities(value: Any) -> str | tuple[str, ...]:
    if isinstance(value, str):
        if value in PRESETS:
            return value
        raise ValueError(
            f'{value!r} is not a capability set; write "default", "os" or a list such as '
            '["CAP_NET_BIND_SERVICE"]'
        )
    if not isinstance(value, list):
        raise ValueError(
            f'{scalars.type_name(value)} is not a capability set; write "default", "os" or a list'
        )
    # Every unknown item at once: fixing one typo per run would take a run per typo.
    unknown = [item for item in value if not isinstance(item, str) or item not in CAPABILITIES]
    if unknown:
        raise ValueError(unknown_capabilities(unknown))
    return tuple(sorted(set(value), key=CAPABILITIES.__getitem__))


def unknown_capabilities(items: list[Any]) -> str:
    shown = ", ".join(repr(i) if isinstance(i, str) else scalars.type_name(i) for i in items)
    what = "is not a Linux capability" if len(items) == 1 else "are not Linux capabilities"
    guesses = [(i, g) for i in items if (g := nearest_capability(i))]
    if len(items) == 1 and guesses:
        hint = f"did you mean {guesses[0][1]!r}?"
    elif guesses:
        hint = "did you mean " + ", ".join(f"{g!r} for {i!r}" for i, g in guesses) + "?"
    else:
        hint = "names look like 'CAP_NET_BIND_SERVICE'"
    return f"{shown} {what}; {hint}"


def nearest_capability(item: object) -> str | None:
    import difflib

    if not isinstance(item, str):
        return None
    guess = item.upper()
    guess = guess if guess.startswith("CAP_") else f"CAP_{guess}"
    if guess in CAPABILITIES:
        return guess
    close = difflib.get_close_matches(guess, CAPABILITIES, n=1)
    return close[0] if close else None


def syscall_names(value: Any) -> tuple[str, ...]:
    if not isinstance(value, list):
        raise ValueError(
            f"{scalars.type_name(value)} is not a list of system calls; write e.g. "
            '["io_uring_setup"]'
        )
    # Every unknown name at once, as for capabilities.
    unknown = [item for item in value if not isinstance(item, str) or item not in SYSCALL_NAMES]
    if unknown:
        raise ValueError(unknown_syscalls(unknown))
    return tuple(sorted(set(value)))  # in any order, once: a reordered list changes nothing


def unknown_syscalls(items: list[Any]) -> str:
    import difflib

    shown = ", ".join(repr(i) if isinstance(i, str) else scalars.type_name(i) for i in items)
    what = "is not a system call" if len(items) == 1 else "are not system calls"
    guesses = [
        (i, close[0])
        for i in items
        if isinstance(i, str) and (close := difflib.get_close_matches(i, SYSCALL_NAMES, 1, 0.75))
    ]
    if len(items) == 1 and guesses:
        hint = f"did you mean {guesses[0][1]!r}?"
    elif guesses:
        hint = "did you mean " + ", ".join(f"{g!r} for {i!r}" for i, g in guesses) + "?"
    else:
        hint = "names are those of syscalls(2), e.g. 'io_uring_setup'"
    return f"{shown} {what} of x86_64 or aarch64 Linux; {hint}"


def count_or_max(value: Any) -> Any:
    """A limit count, or "max" (no limit), held as None as the cgroup drivers take it."""
    if value == "max":
        return None
    if isinstance(value, str):
        raise ValueError(f'{value!r} is not a count; write an integer, e.g. 512, or "max"')
    return value


def size_or_max(value: Any) -> int | str:
    if value == "max":
        return "max"
    try:
        size = scalars.parse_size(value)
    except ValueError as exc:
        raise ValueError(f'{exc}, or "max"') from None
    if size == 0:
        raise ValueError('0 bytes is no room at all; write a size, e.g. "64M", or "max"')
    return size


def size(value: Any) -> int:
    return scalars.parse_size(value)


def duration(value: Any) -> int:
    return scalars.parse_duration_ns(value)


def signed_duration(value: Any) -> int:
    return scalars.parse_duration_ns(value, signed=True)


def percent_text(percent: float) -> str:
    # 15 significant digits: what a float keeps of the decimal written; ":g" kept only 6.
    return f"{percent:.15g}%"


def file_mode_text(mode: int) -> str:
    return f"{mode:04o}"


def boot_defaults(data: Any) -> Any:
    """What a booted sandbox gets where its unit says nothing, set as if written, so that the
    canonical unit, the plan and the record all show it (constants.BOOT_DEFAULTS)."""
    if not isinstance(data, dict) or not isinstance(data.get("sandbox"), dict):
        return data
    if data["sandbox"].get("boot") is not True:
        return data
    filled = {**data, "sandbox": {**data["sandbox"]}}
    for (table, key), value in BOOT_DEFAULTS.items():
        section = filled.get(table, {})
        if not isinstance(section, dict):
            continue  # the model refuses it, naming the key
        filled[table] = {key: value, **section}
    return filled


def shm_bytes(shm_size: int | str | None) -> int | None:
    """A sandbox's /dev/shm tmpfs size in bytes from its `shm_size`; None: the kernel's default
    (half of RAM)."""
    if shm_size is None:
        return DEFAULT_SHM_SIZE
    return None if shm_size == "max" else int(shm_size)
