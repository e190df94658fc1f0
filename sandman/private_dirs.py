"""sandman's data dirs (state, images, persistent upper layers, logs): open to their owner only.

What they hold is not for other local users: an image's setuid-root `su`, a sandbox's files, its
logs. So every level sandman makes is 0700, and a data dir found open to group or others is closed
(chmod 0700) rather than refused: sandman owns it, nothing but sandman should read it, and an older
sandman (or its tmpfiles.d line) made these dirs 0755, so refusing would stop every upgraded host
until an admin ran the chmod sandman can run itself. Closing it only takes access away. A data dir
owned by another user is refused: its owner could open it again at any time, or swap what is
inside; so is one inside a dir another user can change. nspawn keeps /var/lib/machines 0700, podman
its storage 0700, for the same reasons.

This module imports only `os` and `stat`: `status` and a no-op `apply` pass through here.
"""

from __future__ import annotations

import os
import stat

from sandman.errors import SandmanError

PRIVATE = 0o700


class PrivateDirError(SandmanError):
    """A data dir cannot be made, or is not a directory sandman's user alone controls."""


def private_dir(path: str, what: str) -> str:
    """Make PATH (and each missing parent) 0700, or close an existing PATH to group and others;
    WHAT names it in errors (`image dir (--image-dir)`). Returns the absolute path."""
    path = os.path.abspath(path)
    missing = []
    level = path
    while not os.path.lexists(level) and level != os.path.dirname(level):
        missing.append(level)
        level = os.path.dirname(level)
    for directory in reversed(missing):
        try:
            os.mkdir(directory, PRIVATE)
        except FileExistsError:
            pass  # made meanwhile: checked below like any existing dir
        except OSError as exc:
            raise PrivateDirError(f"cannot make the {what} `{directory}`: {exc.strerror}") from exc
        _close(directory, what)
    if not missing:
        _close(path, what)
    _check_above(path, what)
    return path


def _check_above(path: str, what: str) -> None:
    """Whoever may rename an entry of a dir above PATH can move the data dir away and put one
    of their own in its place, whatever its mode: every dir above must be root's (or sandman's
    user's), and not writable by others unless sticky (/tmp). Group write is the admin's choice
    (Ubuntu's /var/log is root:syslog 0775) and is left alone."""
    mine = os.geteuid()
    level = os.path.dirname(os.path.realpath(path))
    while True:
        info = os.stat(level)
        if info.st_uid not in (0, mine):
            who = f"uid {info.st_uid}, its owner,"
        elif info.st_mode & stat.S_IWOTH and not info.st_mode & stat.S_ISVTX:
            who = "every user"
        else:
            who = ""
        if who:
            raise PrivateDirError(
                f"the {what} `{path}` is inside `{level}`, where {who} can swap it for a dir of "
                f"their own; choose a {what} whose parents only root can change"
            )
        if level == os.path.dirname(level):
            return
        level = os.path.dirname(level)


def _close(path: str, what: str) -> None:
    """Check PATH through one fd (what is checked is what is changed) and chmod it 0700."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except NotADirectoryError:
        raise PrivateDirError(
            f"the {what} `{path}` is not a directory; remove it or choose another {what}"
        ) from None
    except OSError as exc:
        raise PrivateDirError(f"cannot open the {what} `{path}`: {exc.strerror}") from exc
    try:
        info = os.fstat(fd)
        mine = os.geteuid()
        if info.st_uid != mine:
            raise PrivateDirError(
                f"the {what} `{path}` is owned by uid {info.st_uid}, not by sandman's user "
                f"(uid {mine}): its owner could open it to others or swap what is inside; "
                f"`chown {mine} {path}`, or choose another {what}"
            )
        if stat.S_IMODE(info.st_mode) & 0o077:
            os.fchmod(fd, PRIVATE)
    except OSError as exc:
        raise PrivateDirError(f"cannot make the {what} `{path}` private: {exc.strerror}") from exc
    finally:
        os.close(fd)
