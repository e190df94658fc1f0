"""Carrying a plan out: the only layer besides kernel/ that changes the host.

It runs the actions the plan names, and for updates and repairs only the steps the plan lists
(plan/keys.py); it converts unit models into the kernel's types; each object's record is written
as soon as the object is done, and a failed object undoes its own partial work. It imports
nothing above it (reconcile, commands, daemon).
"""
