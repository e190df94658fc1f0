"""sandman-oci's entry point: parse, run the verb, turn an error into the log line and the exit
code (1; a foreground `exec` or `run` exits with its process's status, 255 when the runtime
itself fails). No traceback reaches the client: conmon and the shim show the last message."""

from __future__ import annotations

import sys
from typing import Any

from sandman.oci.errors import OciError


def main(argv: list[str] | None = None) -> int:
    words = sys.argv[1:] if argv is None else argv
    args = _parse(words)
    try:
        return _run(args)
    except OciError as exc:
        _error(args, exc.message)
        return exc.code
    except OSError as exc:
        _error(args, str(exc))
        return 255 if args.get("verb") == "exec" else 1


def _parse(words: list[str]) -> dict[str, Any]:
    """The engines' usual lines without argparse; any other (and --help, and errors) by it."""
    from sandman.oci import fast_args

    args = fast_args.read(words)
    if args is not None:
        return args
    from sandman.oci.args import parser, verb_of

    return vars(parser(verb_of(words)).parse_args(words))


def _error(args: dict[str, Any], message: str) -> None:
    from sandman.oci.logs import write_error

    write_error(message, args.get("log"), args.get("log_format") or "text")


def _run(args: dict[str, Any]) -> int:
    verb = args.get("verb")
    if args.get("version") and verb is None:
        from sandman import __version__
        from sandman.oci.lifecycle import OCI_VERSION

        print(f"sandman-oci version {__version__}\nspec: {OCI_VERSION}")
        return 0
    if verb is None:
        raise OciError("a verb is needed: sandman-oci --help lists them")
    from sandman.oci import dispatch
    from sandman.oci.state import Store

    return dispatch.VERBS[verb](Store(args["root"]), args)


def entry() -> None:
    # Engines start the runtime several times per container: no interpreter teardown (leave.py).
    from sandman.leave import leave

    leave(main())
