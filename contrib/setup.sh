#!/bin/sh
# Set up sandman in ./.venv on a Debian machine, as root: Debian packages first (busybox-static
# for the built-in image, python3-venv where the interpreter lacks venv), then the Python package,
# then its shell completion and man pages under /usr/local/share (contrib/install-docs.sh).
# `--test` adds the test tools (pytest, hypothesis, ruff, mypy) and the VM runner's (qemu,
# mmdebstrap).
set -eu
cd "$(dirname "$0")/.."

extras=""
[ "${1:-}" = "--test" ] && extras="[test]"

missing="" vm_missing=""
command -v python3 >/dev/null 2>&1 || missing="$missing python3"
python3 -c 'import ensurepip, venv' >/dev/null 2>&1 || missing="$missing python3-venv"
dpkg -s busybox-static >/dev/null 2>&1 || missing="$missing busybox-static"
if [ -n "$extras" ]; then
    # The security tests build a tiny static probe (a syscall no busybox applet makes); the
    # service tests run systemd-analyze and systemd-tmpfiles (Debian's systemd package); the
    # completion tests press TAB in zsh, the man page tests render with groff; the network
    # tests read the rules from outside with nft and ip (a fresh Debian may lack nftables).
    for package in gcc libc6-dev systemd zsh groff-base nftables iproute2; do
        dpkg -s "$package" >/dev/null 2>&1 || missing="$missing $package"
    done
    # The VM runner (tests/vm/run.py) builds and boots a pure cgroup v2 guest: qemu (without its
    # recommends, a GUI) and Debian's image tools. Not in that guest itself (VM_BOOT is set
    # there): it has no network and boots no VM.
    if [ -z "${VM_BOOT:-}" ]; then
        for package in qemu-system-x86 qemu-utils mmdebstrap e2fsprogs git; do
            dpkg -s "$package" >/dev/null 2>&1 || vm_missing="$vm_missing $package"
        done
        # The container image tests (tests/root/test_oci_import.py) build and save images with
        # podman (and runc) and unpack them with skopeo and umoci as the reference.
        for package in podman runc skopeo umoci; do
            dpkg -s "$package" >/dev/null 2>&1 || missing="$missing $package"
        done
        # The OCI runtime tests (tests/root/test_oci_*.py) drive sandman-oci with podman and
        # containerd, build the runtime-tools validation suite with Go and run it with yath,
        # on busybox-static bundles; runc is the reference the bench compares with.
        for package in containerd golang-go libtest2-harness-perl busybox-static; do
            dpkg -s "$package" >/dev/null 2>&1 || missing="$missing $package"
        done
    fi
fi
if [ -n "$missing$vm_missing" ]; then
    echo "setup: installing Debian packages:$missing$vm_missing" >&2
    apt-get update -qq
fi
if [ -n "$missing" ]; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $missing >/dev/null
fi
if [ -n "$vm_missing" ]; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $vm_missing \
        >/dev/null
fi

[ -x .venv/bin/python ] || python3 -m venv .venv
echo "setup: installing sandman$extras into .venv" >&2
log=$(mktemp)
# compat: the editable install is a plain path in a .pth file. The default is an import hook whose
# module every interpreter start imports (pathlib, importlib.util): 14-22 ms of each sandman,
# sandman-oci and console keeper start, against 3 ms with the path (python -X importtime, site).
if ! .venv/bin/python -m pip install -q --disable-pip-version-check -e ".$extras" \
    --config-settings editable_mode=compat >"$log" 2>&1; then
    cat "$log" >&2
    rm -f "$log"
    exit 1
fi
rm -f "$log"
echo "setup: installing shell completion and man pages under /usr/local/share" >&2
sh contrib/install-docs.sh
