"""Shell completion scripts, made from the command line itself (cli_spec.py): `sandman
completion SHELL` prints one, contrib/setup.sh installs them. Each shell has its module, which
makes its script from a cli_spec.Command."""

from __future__ import annotations

import importlib

from sandman.cli_spec import command_line

# How a script asks sandman for the names of applied sandboxes, objects and images, by kind:
# the verb whose --json lists them, and what the program below picks from it.
QUERIES = {
    "sandbox": ("status", "sandboxes"),
    "object": ("status", "objects"),
    "image": ("images", "images"),
}
# Reads `status --json` or `images --json` on stdin, prints one name a line: sandboxes, objects
# (sandboxes, network/NAME, slice/NAME) or images, as argv[1] says. python3: the interpreter
# sandman runs on is one, and a shell has no JSON parser.
NAMES_PROGRAM = """import json, sys
what, data = sys.argv[1], json.load(sys.stdin)
if what == "images":
    names = [i["name"] for i in data.get("images", [])]
else:
    names = [s["name"] for s in data.get("sandboxes", [])]
    if what == "objects":
        names += [k[:-1] + "/" + o["name"] for k in ("networks", "slices") for o in data.get(k, [])]
print("\\n".join(names))"""


def script(shell: str) -> str:
    module = importlib.import_module(f"sandman.completion.{shell}")
    text: str = module.script(command_line())
    return text
