"""OCI hooks run on the host: prestart and createRuntime once the init waits at its gate,
poststart after `start`, poststop at `delete`; each gets the container's state JSON on stdin."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from sandman.oci.errors import OciError


def run(stage: str, hooks: Mapping[str, Any], state: Mapping[str, Any], fatal: bool = True) -> None:
    if not hooks.get(stage):
        return
    import subprocess  # here: most containers have no hooks, and it is 3 ms of every create

    for index, hook in enumerate(hooks[stage]):
        args = list(hook.get("args") or [hook["path"]])
        env = dict(str(e).partition("=")[::2] for e in hook.get("env") or [])
        try:
            done = subprocess.run(
                args,
                executable=hook["path"],
                input=json.dumps(state).encode(),
                env=env,
                timeout=hook.get("timeout"),
                capture_output=True,
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            if fatal:
                raise OciError(f"hooks.{stage}[{index}]: {hook['path']}: {exc}") from None
            continue
        if done.returncode != 0 and fatal:
            message = done.stderr.decode(errors="replace").strip()
            raise OciError(
                f"hooks.{stage}[{index}]: {hook['path']} exited with {done.returncode}: {message}"
            )
