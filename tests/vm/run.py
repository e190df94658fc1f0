#!/usr/bin/env python3
"""Run a command, or the root tests CI runs there, on a pure cgroup v2 Debian guest (issue #16).

    sudo .venv/bin/python tests/vm/run.py -- 'uname -r; cat /sys/fs/cgroup/cgroup.controllers'
    sudo .venv/bin/python tests/vm/run.py --tests            # the files of tests/vm/guest-tests.txt
    sudo .venv/bin/python tests/vm/run.py --systemd -- ...   # systemd as PID 1; reboots on request

The guest is Debian's stock kernel booted with cgroup v1 off, built from the host's apt sources
and cached (see vm_build.py); `--help` says the rest. Standard library only: a Python with pip
(the checkout's .venv) builds the guest's wheelhouse.
"""

import sys

from vm_cli import main

if __name__ == "__main__":
    sys.exit(main())
