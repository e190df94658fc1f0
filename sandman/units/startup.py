"""Keep pydantic's start-up cost to what sandman uses.

pydantic looks for plugins (package entry points) the first time it builds a model, and its
loader module imports `importlib.metadata` to do so: 13 ms here, a tenth of `sandman validate`.
sandman uses no pydantic plugin, so the loader is replaced by one that has none. Anything else
asked of it loads the real module in its place, so a pydantic release that uses more of the
loader still works, only without the saving (a test watches for that).
"""

from __future__ import annotations

import importlib
import sys
import types

_LOADER = "pydantic.plugin._loader"


class _NoPlugins(types.ModuleType):
    @staticmethod
    def get_plugins() -> tuple[()]:
        return ()

    def __getattr__(self, attribute: str) -> object:
        if attribute.startswith("__"):
            # The import system probes `__path__` and the like; they say nothing about plugins.
            raise AttributeError(attribute)
        if sys.modules.get(_LOADER) is self:
            del sys.modules[_LOADER]
        return getattr(importlib.import_module(_LOADER), attribute)


def skip_pydantic_plugins() -> None:
    if _LOADER not in sys.modules:
        sys.modules[_LOADER] = _NoPlugins(_LOADER)
