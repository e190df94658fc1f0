"""The layers of sandman and the imports they may not make, read from the source (every import,
at module level, in functions and under TYPE_CHECKING): the architecture holds because a test
fails on a forbidden edge, not because everyone remembers it.

- kernel/ talks to the kernel with its own value types: it imports nothing of units/, plan/,
  observe/, apply/, images/ (nor anything above them).
- images/ writes the image store and nothing else: no other layer (the unit model's image-name
  rule is restated, not imported), and no kernel/ nor plan/ import it.
- plan/ is pure: of observe/ it reads only the facts (data), and nothing with effects.
- observe/ reads the host: no plan, apply or orchestration.
- apply/ carries plans out: nothing above it (reconcile, commands, daemon, cli).
- reconcile strings the layers together for commands/ and daemon/, which it does not import.
"""

from __future__ import annotations

import ast
import pathlib

import pytest

PACKAGE = pathlib.Path(__file__).resolve().parents[2] / "sandman"
ABOVE = ("sandman.reconcile", "sandman.commands", "sandman.daemon", "sandman.cli")
FORBIDDEN: dict[str, tuple[str, ...]] = {
    "sandman.kernel": (
        "sandman.units",
        "sandman.plan",
        "sandman.observe",
        "sandman.apply",
        "sandman.images",
        "sandman.paths",
        *ABOVE,
    ),
    "sandman.images": (
        "sandman.units",
        "sandman.plan",
        "sandman.observe",
        "sandman.apply",
        "sandman.kernel",
        "sandman.paths",
        *ABOVE,
    ),
    "sandman.plan": (
        "sandman.kernel",
        "sandman.apply",
        "sandman.images",
        "sandman.observe.gather",
        *ABOVE,
    ),
    "sandman.observe": ("sandman.plan", "sandman.apply", *ABOVE),
    "sandman.apply": ABOVE,
    "sandman.units": ("sandman.plan", "sandman.observe", "sandman.apply", *ABOVE),
    "sandman.reconcile": ("sandman.commands", "sandman.daemon", "sandman.cli"),
}
# plan/ may read observe's data types, nothing else of observe.
PLAN_MAY_READ = ("sandman.observe.facts",)


def module_name(path: pathlib.Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: pathlib.Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return {name for name in found if name.startswith("sandman")}


def edges() -> list[tuple[str, str]]:
    return [
        (module_name(path), target)
        for path in sorted(PACKAGE.rglob("*.py"))
        for target in sorted(imports(path))
    ]


def within(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def forbidden(source: str, target: str) -> bool:
    for layer, banned in FORBIDDEN.items():
        if within(source, layer) and any(within(target, b) for b in banned):
            return not (layer == "sandman.plan" and target.startswith(PLAN_MAY_READ))
    if within(source, "sandman.plan") and within(target, "sandman.observe"):
        return not target.startswith(PLAN_MAY_READ)
    return False


def test_no_layer_imports_what_it_may_not() -> None:
    wrong = [
        f"{source} imports {target}" for source, target in edges() if forbidden(source, target)
    ]
    assert wrong == [], "forbidden imports:\n" + "\n".join(wrong)


@pytest.mark.parametrize(
    ("source", "target"),
    [
        ("sandman.kernel.cgroup", "sandman.units.model"),
        ("sandman.plan.diff", "sandman.observe.gather"),
        ("sandman.plan.diff", "sandman.kernel.cgroup"),
        ("sandman.observe.preflight", "sandman.plan.actions"),
        ("sandman.apply.applier", "sandman.reconcile"),
        ("sandman.images.store", "sandman.units.scalars"),
        ("sandman.kernel.rootfs", "sandman.images.store"),
        ("sandman.plan.diff", "sandman.images.tarball"),
    ],
)
def test_the_check_sees_a_forbidden_edge(source: str, target: str) -> None:
    assert forbidden(source, target)


def test_the_check_reads_every_kind_of_import() -> None:
    spawn = imports(PACKAGE / "kernel" / "spawn.py")
    assert "sandman.kernel.rootfs" in spawn and "sandman.kernel.syscalls" in spawn
    observe = dict.fromkeys(target for source, target in edges() if source == "sandman.plan.diff")
    assert "sandman.observe.facts" in observe
