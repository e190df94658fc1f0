"""sandman: declarative Linux sandboxes. Imports nothing so that `sandman status` starts cheap."""

__version__ = "0.1.0"
