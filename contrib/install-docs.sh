#!/bin/sh
# Install sandman's shell completion (bash, zsh) and man pages under SHARE (default
# /usr/local/share), made from the command line of the sandman in ./.venv: they describe the
# installed verbs and options, and are made again by each run of contrib/setup.sh.
#   bash: SHARE/bash-completion/completions/sandman (loaded by the bash-completion package;
#         without it, `source` the file from ~/.bashrc)
#   zsh:  SHARE/zsh/site-functions/_sandman (in zsh's default $fpath on Debian)
#   man:  SHARE/man/man1/sandman.1 and sandman-VERB.1 (`man sandman`, `man sandman-apply`)
set -eu
cd "$(dirname "$0")/.."
share=${1:-/usr/local/share}
sandman=.venv/bin/sandman

mkdir -p "$share/bash-completion/completions" "$share/zsh/site-functions" "$share/man/man1"
"$sandman" completion bash >"$share/bash-completion/completions/sandman"
"$sandman" completion zsh >"$share/zsh/site-functions/_sandman"
# The pages of verbs that no longer exist go too: every sandman page is made anew.
rm -f "$share/man/man1/sandman.1" "$share/man/man1"/sandman-*.1
.venv/bin/python -m sandman.manpage "$share/man/man1" >/dev/null
