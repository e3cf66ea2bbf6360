"""How commands print: JSON documents on stdout, aligned tables, warnings on stderr."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable, Sequence
from itertools import islice
from typing import Any

import click

__all__ = ["echo_json", "echo_json_list", "echo_json_lines", "echo_table", "echo_aligned", "warn"]


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
        _write_batches(it, ",\n  ", ",\n  ")
        out.write("\n]\n")
    out.flush()


def _write_batches(texts: Iterable[str], before: str, between: str, after: str = "") -> None:
    """Write the texts a few thousand per write, as they come: each batch as ``before``,
    its texts ``between`` one another, then ``after``."""
    out, it = sys.stdout, iter(texts)
    while batch := list(islice(it, _BATCH)):
        out.write(before + between.join(batch) + after)


_BATCH = 4096


def echo_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    """Left-aligned columns; the last column is never padded."""
    columns = list(zip(*rows, strict=True))[:-1] if rows else [()] * (len(headers) - 1)
    widths = [max(len(h), max(map(len, col), default=0)) for h, col in zip(headers, columns, strict=False)]
    template = "  ".join([*(f"{{:<{w}}}" for w in widths), "{}"])
    echo_aligned(headers, widths, [template.format(*row).rstrip() for row in rows])


def echo_aligned(headers: Sequence[str], widths: Sequence[int], lines: Iterable[str]) -> None:
    """A table whose ``lines`` are already aligned to ``widths`` (each column's but the
    last, two spaces apart): the header, bold on a terminal, then the lines a few
    thousand per write as they come (not ``click.echo``, which would scan a 10 MB table
    for ANSI codes: texts kache formats, no escapes)."""
    head = "  ".join([*(h.ljust(w) for h, w in zip(headers, widths, strict=False)), headers[-1]]).rstrip()
    click.echo(click.style(head, bold=True) if sys.stdout.isatty() else head)
    _write_batches(lines, "", "\n", "\n")
    sys.stdout.flush()


def warn(message: str) -> None:
    click.echo(f"kache: warning: {message}", err=True)
