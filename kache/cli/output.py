"""How commands print: JSON documents on stdout, aligned tables, warnings on stderr."""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from typing import Any

import click

__all__ = ["echo_json", "echo_json_list", "echo_table", "warn"]


def echo_json(document: Any) -> None:
    """One JSON document on stdout, stable key order as given."""
    click.echo(json.dumps(document, indent=2, default=str))


def echo_json_list(items: Sequence[Any]) -> None:
    """A JSON array on stdout, one compact object per line (``[]`` when empty).

    For long lists: ``json.dumps`` with ``indent`` runs the pure-Python encoder, ~10× slower.
    """
    if not items:
        click.echo("[]")
        return
    dumps = json.JSONEncoder(default=str, separators=(", ", ": ")).encode
    click.echo("[\n  " + ",\n  ".join(dumps(item) for item in items) + "\n]")


def echo_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    """Left-aligned columns; the last column is never padded."""
    widths = [max([len(h), *(len(r[i]) for r in rows)]) for i, h in enumerate(headers)]

    def line(cells: Sequence[str]) -> str:
        head = [c.ljust(w) for c, w in zip(cells[:-1], widths[:-1])]
        return "  ".join([*head, cells[-1]]).rstrip()

    click.echo(click.style(line(headers), bold=True) if sys.stdout.isatty() else line(headers))
    for row in rows:
        click.echo(line(row))


def warn(message: str) -> None:
    click.echo(f"kache: warning: {message}", err=True)
