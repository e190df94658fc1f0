"""The two hashes sandman takes at every start (the unit cache's key, records' digests, names),
from CPython's own modules: `hashlib` loads OpenSSL's libcrypto first, 2-3 ms of every command
for hashes these implementations give the same. hashlib where they are missing."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the same classes, as typeshed knows them
    from hashlib import blake2b, sha256
else:
    try:
        from _blake2 import blake2b
        from _sha256 import sha256
    except ImportError:  # another interpreter, or Python 3.12's _sha2
        from hashlib import blake2b, sha256

__all__ = ["blake2b", "sha256"]
