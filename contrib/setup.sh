#!/bin/sh
# Set up sandman in ./.venv on a Debian machine, as root: Debian packages first (busybox-static
# for the built-in image, python3-venv where the interpreter lacks venv), then the Python package,
# then its shell completion and man pages under /usr/local/share (contrib/install-docs.sh).
# `--test` adds the test tools (pytest, hypothesis, ruff, mypy).
set -eu
cd "$(dirname "$0")/.."

extras=""
[ "${1:-}" = "--test" ] && extras="[test]"

missing=""
command -v python3 >/dev/null 2>&1 || missing="$missing python3"
python3 -c 'import ensurepip, venv' >/dev/null 2>&1 || missing="$missing python3-venv"
dpkg -s busybox-static >/dev/null 2>&1 || missing="$missing busybox-static"
if [ -n "$extras" ]; then
    # The security tests build a tiny static probe (a syscall no busybox applet makes); the
    # service tests run systemd-analyze and systemd-tmpfiles (Debian's systemd package); the
    # completion tests press TAB in zsh, the man page tests render with groff.
    for package in gcc libc6-dev systemd zsh groff-base; do
        dpkg -s "$package" >/dev/null 2>&1 || missing="$missing $package"
    done
fi
if [ -n "$missing" ]; then
    echo "setup: installing Debian packages:$missing" >&2
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $missing >/dev/null
fi

[ -x .venv/bin/python ] || python3 -m venv .venv
echo "setup: installing sandman$extras into .venv" >&2
log=$(mktemp)
if ! .venv/bin/python -m pip install -q --disable-pip-version-check -e ".$extras" >"$log" 2>&1; then
    cat "$log" >&2
    rm -f "$log"
    exit 1
fi
rm -f "$log"
echo "setup: installing shell completion and man pages under /usr/local/share" >&2
sh contrib/install-docs.sh
