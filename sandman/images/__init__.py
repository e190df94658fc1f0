"""The image store: store (list, remove, the atomic build and swap under the image dir's lock),
busybox (the built-in image), tarball (checked extraction within bounds) and dircopy (a
directory copied by fd).

It writes under the image dir and nowhere else, and imports nothing of units/, plan/, observe/,
apply/ or kernel/ (tests/unit/test_layers.py). This file imports nothing, and store.py imports
the builders only when one runs: `sandman images` only lists.
"""
