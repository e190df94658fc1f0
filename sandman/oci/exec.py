"""`exec`: a process in a running container."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sandman.oci.errors import OciError
from sandman.oci.state import Store


def exec_in(store: Store, args: Mapping[str, Any]) -> int:
    store.load(str(args["id"]))
    raise OciError("exec is not implemented yet")
