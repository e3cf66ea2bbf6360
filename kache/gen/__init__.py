"""Files generated from ``schema/config.schema.json`` and :mod:`kache.daemon.wire`; ``kache dev gen``
writes them."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

__all__ = ["GENERATED", "generate"]


def _readme(root: Path, current: str) -> str:
    from kache.gen.readme import render

    return render(current, str(root / "schema" / "config.schema.json"))


def _nix_module(root: Path, current: str) -> str:
    from kache.gen.nix import render_module

    return render_module(str(root / "schema" / "config.schema.json"))


def _native_wire(root: Path, current: str) -> str:
    from kache.gen.native import render_wire

    return render_wire()


# path relative to the project root → function(root, current text) → wanted text
GENERATED: dict[str, Callable[[Path, str], str]] = {
    "README.md": _readme,
    "nix/module.nix": _nix_module,
    "kache/native/wire.rs": _native_wire,
}


def generate(root: Path) -> dict[str, tuple[str, str]]:
    """For each generated file: (current text, wanted text)."""
    out = {}
    for rel, fn in GENERATED.items():
        path = root / rel
        current = path.read_text(encoding="utf-8") if path.exists() else ""
        out[rel] = (current, fn(root, current))
    return out
