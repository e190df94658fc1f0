"""What exists: the records under the state dir and the kernel's own view of them (drift), the
orphans, and the preflight checks of a plan against the host. Reads only; plans nothing, applies
nothing.
"""
