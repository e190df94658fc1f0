"""A stable hash of a canonical form: what a record stores to compare later applies with."""

from __future__ import annotations

import json
from typing import Any

from sandman.hashing import sha256


def digest(canonical: dict[str, Any]) -> str:
    text = json.dumps(canonical, sort_keys=True, separators=(",", ":"))
    return sha256(text.encode()).hexdigest()[:16]
