"""The zsh completion script (`_sandman`, for a directory of $fpath): one function per command,
made from the command line, with zsh's own _arguments, _describe and _files."""

from __future__ import annotations

from sandman.cli_spec import Command, Option, Positional, Value, path_options
from sandman.completion import NAMES_PROGRAM, QUERIES

_HEADER = """\
#compdef sandman
# zsh completion for sandman, made from its command line by `sandman completion zsh`.
# The names of applied sandboxes, objects and images are asked of sandman as you complete.
"""

_NAMES = """
_sandman__names() {
  # $1: sandbox, object or image. Asks the command being completed, with the path options
  # typed, for the names of what is applied.
  local kind=$1 verb what i
  local -a names paths expl
  case $kind in
%(queries)s
  esac
  for (( i = 1; i < $#words; i++ )); do
    case ${words[i]} in
      (%(paths)s) paths+=(${words[i]} ${(Q)words[i+1]}) ;;
      (%(paths_eq)s) paths+=(${(Q)words[i]}) ;;
    esac
  done
  names=(${(f)"$(${~_sandman_command} $verb --json $paths 2>/dev/null |
    python3 -c '%(program)s' $what 2>/dev/null)"})
  _wanted $what expl $kind compadd -a names
}
"""

# Autoloaded from $fpath, the file is _sandman's body: it defines the functions, then completes.
# Sourced (`source <(sandman completion zsh)`), it registers _sandman instead.
_TAIL = """
if [[ $zsh_eval_context[-1] == loadautofunc ]]; then
  _sandman "$@"
else
  compdef _sandman sandman
fi
"""

# An action that starts with a space is called as written, without compadd's options added.
_ACTIONS = {
    "dir": "_files -/",
    "file": "_files",
    "sandbox": " _sandman__names sandbox",
    "object": " _sandman__names object",
    "image": " _sandman__names image",
    "dir_or_object": '_alternative "directories:directory:_files -/" '
    '"objects:object: _sandman__names object"',
    "none": " ",
}


def script(root: Command) -> str:
    flags = path_options(root)
    names = _NAMES % {
        "queries": "\n".join(
            f"    ({kind}) verb={verb} what={what} ;;" for kind, (verb, what) in QUERIES.items()
        ),
        "paths": "|".join(flags),
        "paths_eq": "|".join(f"{flag}=*" for flag in flags),
        "program": NAMES_PROGRAM,
    }
    functions = [_function(command) for command in root.walk()]
    return _HEADER + names + "".join(functions) + _TAIL


def _function(command: Command) -> str:
    specs = [spec for option in command.options for spec in _option_specs(option)]
    if not command.subcommands:
        specs += [_positional_spec(p) for p in command.positionals]
        return f"\n{_name(command)}() {{\n  _arguments -s -S \\\n{_lines(specs)}\n}}\n"
    return _dispatch(command, specs)


def _dispatch(command: Command, specs: list[str]) -> str:
    """A command with subcommands: complete their names, then hand over to the one typed."""
    described = [_quote(f"{sub.path[-1]}:{sub.summary}") for sub in command.subcommands]
    cases = "".join(f"        ({sub.path[-1]}) {_name(sub)} ;;\n" for sub in command.subcommands)
    context = "-".join(("sandman", *command.path))
    first = "  local _sandman_command=${words[1]}\n" if not command.path else ""
    return (
        f"\n{_name(command)}() {{\n{first}"
        "  local curcontext=$curcontext state state_descr line\n"
        "  local -A opt_args\n"
        f"  local -a subcommands=(\n{_lines(described, '    ', '')}\n  )\n"
        "  _arguments -C \\\n"
        f"{_lines([*specs, _quote(': :->subcommand'), _quote('*:: :->rest')])} && return\n"
        "  case $state in\n"
        f"    (subcommand) _describe -t commands {_quote(context + ' subcommand')} subcommands ;;\n"
        "    (rest)\n"
        f"      curcontext=${{curcontext%:*:*}}:{context}-${{words[1]}}:\n"
        f"      case ${{words[1]}} in\n{cases}      esac ;;\n"
        "  esac\n}\n"
    )


def _option_specs(option: Option) -> list[str]:
    exclusive = (*option.flags, *option.excludes)
    group = f"({' '.join(exclusive)})" if len(exclusive) > 1 else ""
    specs = []
    for flag in option.flags:
        described = f"{group}{flag}"
        if option.value is not None:
            described += "=" if flag.startswith("--") else "+"
        described += f"[{_bracketed(option.help)}]"
        if option.value is not None:
            described += f":{_message(option.value)}:{_action(option.value)}"
        specs.append(_quote(described))
    return specs


def _positional_spec(positional: Positional) -> str:
    value = positional.value
    lead = "*:" if positional.repeats else "::" if positional.optional else ":"
    return _quote(f"{lead}{_message(value)}:{_action(value)}")


def _action(value: Value) -> str:
    if value.kind == "choice":
        return f"({' '.join(value.choices)})"
    return _ACTIONS[value.kind]


def _message(value: Value) -> str:
    return value.metavar.replace(":", "\\:")


def _bracketed(text: str) -> str:
    """The first sentence of a help text, as _arguments takes it between brackets."""
    first = text.split("; ", maxsplit=1)[0].split(". ", maxsplit=1)[0]
    return first.replace("\\", "\\\\").replace("[", "\\[").replace("]", "\\]")


def _quote(text: str) -> str:
    return "'" + text.replace("'", "'\\''") + "'"


def _lines(items: list[str], indent: str = "    ", tail: str = " \\") -> str:
    return f"{tail}\n".join(f"{indent}{item}" for item in items)


def _name(command: Command) -> str:
    return "_".join(("_sandman", *(part.replace("-", "_") for part in command.path)))
