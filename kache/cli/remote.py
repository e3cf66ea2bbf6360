"""``kache sync``: the local store and the S3 remote (kache.remote.sync does the work).

boto3, zstandard and rich are imported inside the command, so ``kache --help`` and the
other commands do not pay for them.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from kache import settings as settings_mod
from kache import units
from kache.cli.output import echo_json, warn
from kache.errors import KacheError

if TYPE_CHECKING:
    from kache.remote.sync import SyncReport, Transfer

__all__ = ["COMMANDS"]


def _no_remote_message(s: settings_mod.Settings) -> str:
    shown = str(settings_mod.user_config_path(s.env))
    home = (s.env.get("HOME") or "").rstrip("/")
    if home and shown.startswith(home + "/"):
        shown = "~" + shown[len(home):]
    return (f"no remote configured: set cache.remote.bucket in {shown} (under [cache.remote], "
            "bucket = \"…\") or KACHE_S3_BUCKET")


class _RichProgress:
    """Progress bars on stderr: one per phase, objects and bytes."""

    def __init__(self) -> None:
        from rich.console import Console
        from rich.progress import (BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn,
                                   TransferSpeedColumn)

        self._bars = Progress(TextColumn("{task.description}"), BarColumn(), DownloadColumn(binary_units=True),
                              TransferSpeedColumn(), TimeRemainingColumn(), console=Console(stderr=True))
        self._tasks: dict[str, Any] = {}
        self._objects: dict[str, tuple[int, int]] = {}

    def start(self, phase: str, objects: int, nbytes: int) -> None:
        if not objects:
            return
        if not self._tasks:
            self._bars.start()
        words = "pulling" if phase == "pull" else "pushing"
        self._tasks[phase] = self._bars.add_task(words, total=nbytes or None)
        self._objects[phase] = (0, objects)
        self._describe(phase)

    def _describe(self, phase: str) -> None:
        done, total = self._objects[phase]
        words = "pulling" if phase == "pull" else "pushing"
        self._bars.update(self._tasks[phase], description=f"{words} {done}/{total}")

    def advance(self, phase: str, nbytes: int) -> None:
        if phase in self._tasks:
            done, total = self._objects[phase]
            self._objects[phase] = (done + 1, total)
            self._bars.update(self._tasks[phase], advance=nbytes)
            self._describe(phase)

    def finish(self, phase: str) -> None:
        pass

    def stop(self) -> None:
        if self._tasks:
            self._bars.stop()


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def _print_summary(report: SyncReport) -> None:
    size = units.format_size
    would = "would " if report.dry_run else ""

    def listing(items: list[Transfer], verb: str) -> None:
        for t in items:
            click.echo(f"  {verb} {t.crate} {t.key[:16]}  {size(t.size)}")

    if report.pull:
        scope = "all crates" if report.crates is None else f"{_plural(report.crates, 'crate')} of Cargo.lock"
        click.echo(f"{would}pull: {_plural(len(report.pulled), 'object')}, {size(report.pulled_bytes)} "
                   f"({scope}; {report.pull_up_to_date} already local)")
        if report.dry_run:
            listing(report.pulled, "pull")
    if report.push:
        extra = " (uncompressed; archives are smaller)" if report.dry_run and report.pushed else ""
        click.echo(f"{would}push: {_plural(len(report.pushed), 'object')}, "
                   f"{size(report.pushed_bytes)}{extra} ({report.push_up_to_date} already on the remote)")
        if report.dry_run:
            listing(report.pushed, "push")
    if report.skipped:
        reasons: dict[str, int] = {}
        for s in report.skipped:
            reasons[s.reason] = reasons.get(s.reason, 0) + 1
        counts = ", ".join(f"{r} {n}" for r, n in sorted(reasons.items()))
        click.echo(f"skipped: {len(report.skipped)} ({counts})")
        for s in report.skipped:
            click.echo(f"  {s.message}")
    if report.failures:
        click.echo(f"failed: {len(report.failures)}")
        for s in report.failures:
            click.echo(f"  {s.message}")


@click.command()
@click.option("--pull", is_flag=True, help="Download only.")
@click.option("--push", is_flag=True, help="Upload only.")
@click.option("--all", "all_", is_flag=True, help="Pull everything, not only the crates in Cargo.lock.")
@click.option("--dry-run", is_flag=True, help="Show what would be transferred.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def sync(ctx: click.Context, pull: bool, push: bool, all_: bool, dry_run: bool, as_json: bool) -> None:
    """Synchronise the local store with the S3 remote (pull, then push).

    Pulls the entries of the crates in the current workspace's Cargo.lock (every crate
    with --all) that the local store lacks, and pushes the local entries the remote
    lacks. With neither --pull nor --push, does both. Exits with 1 when a transfer failed.

    \b
    Example:
      kache sync --pull --dry-run
    """
    from kache.remote.s3 import Remote
    from kache.remote.sync import find_workspace_root
    from kache.remote.sync import sync as run_sync
    from kache.store.index import Store, StoreError

    s = settings_mod.load()
    for w in s.warnings:
        warn(w)
    settings_mod.validate(s)
    remote = Remote.from_settings(s)
    if remote is None:
        raise KacheError(_no_remote_message(s))
    for w in remote.warnings:
        warn(w)
    if not pull and not push:
        pull = push = True
    workspace = None
    if pull and not all_:
        workspace = find_workspace_root(Path.cwd())
        if workspace is None:
            raise KacheError(f"sync failed: {Path.cwd()}: no Cargo.lock here or in a parent directory; "
                             "run it in a cargo workspace, or pass --all to pull every crate "
                             "(--push to upload only)")
    store = Store(str(s.local_store))
    progress = _RichProgress() if (sys.stderr.isatty() and not as_json and not dry_run) else None
    try:
        try:
            store.db  # noqa: B018 - open (and create) now, so a broken store is reported as such
        except StoreError as e:
            raise KacheError(f"sync failed: {s.local_store}: {e}") from None
        report = run_sync(store, remote, pull=pull, push=push, all_crates=all_, workspace=workspace,
                          dry_run=dry_run, concurrency=int(s["cache.s3_concurrency"]), progress=progress)
    finally:
        if progress is not None:
            progress.stop()
        store.close()
    if as_json:
        echo_json(report.to_json())
    else:
        _print_summary(report)
    if not report.ok:
        ctx.exit(1)


COMMANDS: list[click.Command] = [sync]
