"""The kernel layer: namespaces, mounts, cgroups, links, nf_tables, seccomp, through the one
ctypes module (syscalls.py) and sandman's own netlink (netlink.py, rtnl.py); no pyroute2.

It takes its own value types (CgroupLimits, RootfsPlan, SpawnSpec, EnterSpec...) and imports
nothing of units/, plan/, observe/ or apply/ (tests/unit/test_layers.py). Every failure is an
OSError naming what refused; the layers above add the unit file and key.
"""
