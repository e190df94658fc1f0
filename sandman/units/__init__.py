"""The desired state: unit files loaded, validated, cross-checked and resolved."""

from sandman.units.startup import skip_pydantic_plugins

# Before any module of this package imports pydantic: see startup.py for why.
skip_pydantic_plugins()
