"""sandman-oci's entry point: parse, run the verb, turn an error into the log line and the exit
code (1; a foreground `exec` or `run` exits with its process's status, 255 when the runtime
itself fails). No traceback reaches the client: conmon and the shim show the last message."""

from __future__ import annotations

import sys

from sandman.oci.errors import OciError


def main(argv: list[str] | None = None) -> int:
    from sandman.oci.args import parser, verb_of

    words = sys.argv[1:] if argv is None else argv
    options = parser(verb_of(words)).parse_args(words)
    try:
        return _run(options)
    except OciError as exc:
        _error(options, exc.message)
        return exc.code
    except OSError as exc:
        _error(options, str(exc))
        return 255 if options.verb == "exec" else 1


def _error(options: object, message: str) -> None:
    from sandman.oci.logs import write_error

    write_error(message, getattr(options, "log", None), getattr(options, "log_format", "text"))


def _run(options: object) -> int:
    args = vars(options)
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
    sys.exit(main())
