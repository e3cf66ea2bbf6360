"""How commands print: JSON documents on stdout, aligned tables, warnings on stderr."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable, Sequence
from typing import Any

import click

__all__ = ["echo_json", "echo_json_list", "echo_json_lines", "echo_table", "warn"]


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
    echo_json_lines([dumps(item) for item in items])


def echo_json_lines(texts: Iterable[str]) -> None:
    """Like :func:`echo_json_list`, of objects already written as JSON text (written as
    is: ``click.echo`` would scan a 25 MB listing for ANSI codes), a few thousand at a
    time as ``texts`` yields them: a reader works on the start of a long listing while
    the rest is made."""
    out = sys.stdout
    it = iter(texts)
    first = next(it, None)
    if first is None:
        out.write("[]\n")
    else:
        out.write("[\n  " + first)
        batch: list[str] = []
        for text in it:
            batch.append(text)
            if len(batch) == _BATCH:
                out.write(",\n  " + ",\n  ".join(batch))
                batch.clear()
        out.write("".join(",\n  " + t for t in batch) + "\n]\n")
    out.flush()


_BATCH = 4096


def echo_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    """Left-aligned columns; the last column is never padded."""
    columns = list(zip(*rows))[:-1] if rows else [()] * (len(headers) - 1)
    widths = [max(len(h), max(map(len, col), default=0)) for h, col in zip(headers, columns)]
    template = "  ".join([*(f"{{:<{w}}}" for w in widths), "{}"])
    head = template.format(*headers).rstrip()
    click.echo(click.style(head, bold=True) if sys.stdout.isatty() else head)
    if rows:  # one write of one string (a table of 100,000 rows: not 100,000 echo calls, and
        # not click.echo, which would scan 10 MB for ANSI codes): texts kache formats, no escapes
        sys.stdout.write("\n".join([template.format(*row).rstrip() for row in rows]) + "\n")
        sys.stdout.flush()


def warn(message: str) -> None:
    click.echo(f"kache: warning: {message}", err=True)
