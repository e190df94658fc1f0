"""The bash completion script: a table of every command's options and arguments, made from the
command line, and a fixed engine that reads it. It needs bash 4.4 and nothing else (not the
bash-completion package, whose loader only finds it)."""

from __future__ import annotations

import shlex

from sandman.cli_spec import Command, Value, path_options
from sandman.completion import NAMES_PROGRAM, QUERIES

_HEADER = """\
# bash completion for sandman, made from its command line by `sandman completion bash`.
# The names of applied sandboxes, objects and images are asked of sandman as you complete.
"""

# The engine. COMP_WORDS splits `--opt=value` into `--opt`, `=`, `value`: both forms are read.
_ENGINE = r"""
_sandman_names() {
    # $1: sandbox, object or image; $2: the command; the rest: the path options typed.
    local kind=$1 command=$2 verb what
    shift 2
    case $kind in
%(queries)s
    esac
    "$command" "$verb" --json "$@" 2>/dev/null | python3 -c '%(program)s' "$what" 2>/dev/null
}

_sandman_values() {
    # Completes $cur with what KIND ($1) says; $command and $paths are the caller's.
    local kind=$1 words
    case $kind in
    dir | file)
        compopt -o filenames 2>/dev/null
        [[ $kind == dir ]] && kind=-d || kind=-f
        mapfile -t COMPREPLY < <(compgen "$kind" -- "$cur") ;;
    dir_or_object)
        compopt -o filenames 2>/dev/null
        mapfile -t COMPREPLY < <(compgen -d -- "$cur"
            compgen -W "$(_sandman_names object "$command" "${paths[@]}")" -- "$cur") ;;
    choice:*)
        words=${kind#choice:}
        mapfile -t COMPREPLY < <(compgen -W "${words//|/ }" -- "$cur") ;;
    sandbox | object | image)
        words=$(_sandman_names "$kind" "$command" "${paths[@]}")
        mapfile -t COMPREPLY < <(compgen -W "$words" -- "$cur") ;;
    esac
}

_sandman_kind() {
    # The kind of OPTION's value ($1) in $valued, or nothing when it takes none.
    local entry
    for entry in $valued; do
        [[ ${entry%%%%=*} == "$1" ]] && { printf '%%s' "${entry#*=}"; return; }
    done
}

_sandman() {
    local cur=${COMP_WORDS[COMP_CWORD]} prev=${COMP_WORDS[COMP_CWORD-1]}
    local command=${COMP_WORDS[0]} path='' word kind subs flags valued args
    local -a paths=() kinds
    local i n=0 dashdash=0
    [[ $command == '~/'* ]] && command=$HOME/${command#'~/'}
    COMPREPLY=()
    _sandman_spec ''
    for ((i = 1; i < COMP_CWORD; i++)); do
        word=${COMP_WORDS[i]}
        if ((dashdash)) || [[ $word != -* ]]; then
            if ((n == 0)) && [[ " $subs " == *" $word "* ]]; then
                path=${path:+$path }$word
                _sandman_spec "$path"
            else
                n=$((n + 1))
            fi
        elif [[ $word == -- ]]; then
            dashdash=1
        elif [[ -n $(_sandman_kind "$word") ]]; then
            [[ ${COMP_WORDS[i+1]} == = ]] && i=$((i + 1))
            ((i + 1 < COMP_CWORD)) || continue
            [[ " %(paths)s " == *" $word "* ]] && paths+=("$word" "${COMP_WORDS[i+1]}")
            i=$((i + 1))
        fi
    done
    if [[ $cur == = ]]; then
        cur='' prev=${COMP_WORDS[COMP_CWORD-1]}
    elif [[ $prev == = ]]; then
        prev=${COMP_WORDS[COMP_CWORD-2]}
    fi
    if ((!dashdash)) && [[ $prev == -* ]]; then
        kind=$(_sandman_kind "$prev")
        if [[ -n $kind ]]; then
            _sandman_values "$kind"
            return 0
        fi
    fi
    if ((!dashdash)) && [[ $cur == -* ]]; then
        mapfile -t COMPREPLY < <(compgen -W "$flags" -- "$cur")
    elif [[ -n $subs ]] && ((n == 0)); then
        mapfile -t COMPREPLY < <(compgen -W "$subs" -- "$cur")
    else
        read -ra kinds <<<"$args"
        if ((n < ${#kinds[@]})); then
            kind=${kinds[n]}
        elif ((${#kinds[@]})) && [[ ${kinds[-1]} == *'*' ]]; then
            kind=${kinds[-1]}
        else
            ((dashdash)) || mapfile -t COMPREPLY < <(compgen -W "$flags" -- "$cur")
            return 0
        fi
        _sandman_values "${kind%%'*'}"
    fi
    return 0
}

complete -F _sandman sandman
"""


def script(root: Command) -> str:
    engine = _ENGINE % {
        "queries": _queries(),
        "program": NAMES_PROGRAM,
        "paths": " ".join(path_options(root)),
    }
    return _HEADER + _spec(root) + engine


def _queries() -> str:
    return "\n".join(
        f"    {kind}) verb={verb} what={what} ;;" for kind, (verb, what) in QUERIES.items()
    )


def _spec(root: Command) -> str:
    """`_sandman_spec PATH` sets subs (subcommands), flags (options), valued (OPTION=KIND of
    each option that takes a value) and args (the kinds of the positionals, the last marked *
    when it repeats) for the command PATH ("", "plan", "image import")."""
    cases = [_case(command) for command in root.walk()]
    return (
        "\n_sandman_spec() {\n"
        "    # The command PATH ($1: '', 'plan', 'image import') -> subs: its subcommands; flags:\n"
        "    # its options; valued: OPTION=KIND for each option that takes a value; args: the\n"
        "    # kinds of its positional arguments, the last marked * when it repeats.\n"
        "    subs='' flags='' valued='' args=''\n"
        "    case $1 in\n" + "".join(cases) + "    esac\n}\n"
    )


def _case(command: Command) -> str:
    flags = [flag for option in command.options for flag in option.flags]
    valued = [
        f"{flag}={_kind(option.value)}"
        for option in command.options
        if option.value is not None
        for flag in option.flags
    ]
    args = [_kind(p.value) + ("*" if p.repeats else "") for p in command.positionals]
    fields = {
        "subs": " ".join(sub.path[-1] for sub in command.subcommands),
        "flags": " ".join(flags),
        "valued": " ".join(valued),
        "args": " ".join(args),
    }
    assignments = " ".join(f"{name}={shlex.quote(text)}" for name, text in fields.items() if text)
    return f"    {shlex.quote(' '.join(command.path))}) {assignments} ;;\n"


def _kind(value: Value) -> str:
    if value.kind == "choice":
        return "choice:" + "|".join(value.choices)  # the lists are split at spaces
    return value.kind
