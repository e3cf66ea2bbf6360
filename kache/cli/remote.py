"""``kache sync`` and ``kache remote gc``: the local store and the S3 remote
(kache.remote.sync and kache.remote.gc do the work).

boto3, zstandard and rich are imported inside the command, so ``kache --help`` and the
other commands do not pay for them.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from kache import settings as settings_mod
from kache import units
from kache.cli.output import echo_json, warn
from kache.errors import KacheError

if TYPE_CHECKING:
    from kache.remote.gc import GcReport
    from kache.remote.s3 import Remote
    from kache.remote.sync import SyncReport, Transfer

__all__ = ["COMMANDS"]


def _settings_and_remote() -> tuple[settings_mod.Settings, Remote]:
    """The settings (warnings shown, validated) and the remote they name; a KacheError
    saying how to configure one when they name none."""
    from kache.remote.s3 import Remote

    s = settings_mod.load_checked()
    for w in s.warnings:
        warn(w)
    if s.caching_off or s.remote_off:  # said above; the remote they name is not safe to use
        from kache.errors import SettingsError

        raise SettingsError(s.caching_off + s.remote_off)
    remote = Remote.from_settings(s)
    if remote is None:
        raise KacheError(_no_remote_message(s))
    for w in remote.warnings:
        warn(w)
    return s, remote


def _no_remote_message(s: settings_mod.Settings) -> str:
    shown = str(settings_mod.user_config_path(s.env))
    home = (s.env.get("HOME") or "").rstrip("/")
    if home and shown.startswith(home + "/"):
        shown = "~" + shown[len(home):]
    return (f"no remote configured: set cache.remote.bucket in {shown} (under [cache.remote], "
            "bucket = \"…\") or KACHE_S3_BUCKET")


_PHASE_WORDS = {"pull": "pulling", "push": "pushing", "archives": "deleting archives",
                "check": "reading _mkeys", "mkeys": "deleting _mkeys"}


class _RichProgress:
    """Progress bars on stderr: one per phase, objects and bytes."""

    def __init__(self) -> None:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            DownloadColumn,
            Progress,
            TextColumn,
            TimeRemainingColumn,
            TransferSpeedColumn,
        )

        self._bars = Progress(TextColumn("{task.description}"), BarColumn(), DownloadColumn(binary_units=True),
                              TransferSpeedColumn(), TimeRemainingColumn(), console=Console(stderr=True))
        self._tasks: dict[str, Any] = {}
        self._objects: dict[str, tuple[int, int]] = {}

    def start(self, phase: str, objects: int, nbytes: int) -> None:
        if not objects:
            return
        if not self._tasks:
            self._bars.start()
        self._tasks[phase] = self._bars.add_task(_PHASE_WORDS.get(phase, phase), total=nbytes or None)
        self._objects[phase] = (0, objects)
        self._describe(phase)

    def _describe(self, phase: str) -> None:
        done, total = self._objects[phase]
        self._bars.update(self._tasks[phase], description=f"{_PHASE_WORDS.get(phase, phase)} {done}/{total}")

    def advance(self, phase: str, nbytes: int, objects: int = 1) -> None:
        if phase in self._tasks:
            done, total = self._objects[phase]
            self._objects[phase] = (done + objects, total)
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
        from kache.store.listing import display_name

        for t in items:
            click.echo(f"  {verb} {display_name(t.crate, t.package)} {t.key[:16]}  {size(t.size)}")

    if report.pull:
        scope = ("all crates" if report.packages is None
                 else f"the {_plural(report.packages, 'package')} of Cargo.lock and build scripts")
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
    from kache.remote.sync import find_workspace_root
    from kache.remote.sync import sync as run_sync
    from kache.store.store import Store, StoreError

    s, remote = _settings_and_remote()
    explicit_push = push and not pull
    if not pull and not push:
        pull = push = True
    if push and remote.read_only:
        # A read-only build (a fork's pull request) skips its push: nothing failed.
        warn(f"not pushing: {remote.url} is read-only for this build (cache.remote.read_only, "
             "KACHE_REMOTE_READ_ONLY)")
        push = False
        if explicit_push:
            if as_json:
                echo_json({"pull": None, "push": None, "read_only": True})
            return
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
            store.open()  # (and create) now, so a broken store is reported as such
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


# --------------------------------------------------------------------------- remote gc


@click.group("remote")
def remote_group() -> None:
    """Look after the S3 remote shared by every machine: collect its garbage.

    \b
    Example:
      kache remote gc --unused-for 30d --max-size 200GB
    """


def _parsed(value: str | None, flag: str, parse: Callable[[str], Any]) -> Any:
    if value is None:
        return None
    try:
        return parse(value)
    except units.UnitError as e:
        raise click.BadParameter(str(e), param_hint=flag) from None


@remote_group.command("gc")
@click.option("--unused-for", metavar="DUR",
              help="Delete archives no build has used for this long (e.g. 30d). "
                   "The default, 30d, applies only when --max-size is not given either.")
@click.option("--max-size", metavar="SIZE",
              help="Then delete the least recently used archives until the remote holds at most this much "
                   "(e.g. 500GB).")
@click.option("--dry-run", is_flag=True, help="List what would be deleted; delete nothing.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def remote_gc(ctx: click.Context, unused_for: str | None, max_size: str | None, dry_run: bool,
              as_json: bool) -> None:
    """Delete remote archives unused lately; keep the remote under a size.

    Archives unused for --unused-for go first; then, while the remote holds more than
    --max-size, the least recently used archives; then the _mkeys objects that name
    only deleted archives. With neither option: --unused-for 30d. An archive's last use
    is its LastModified: set by its upload, refreshed (at most once a day) when a build
    fetches it through the daemon; `kache sync --pull` does not count as a use.

    Builds may run meanwhile: nothing written in the last hour is deleted (an upload may
    be running), and a build whose archive goes away compiles instead. Run it from one
    place with write access, e.g. a scheduled CI job; a read-only remote
    (cache.remote.read_only) refuses, except with --dry-run. Exits with 1 when an object
    could not be deleted.

    \b
    Example:
      kache remote gc --unused-for 30d --max-size 200GB --dry-run
    """
    from kache.remote.gc import DEFAULT_UNUSED_FOR, collect

    age = _parsed(unused_for, "--unused-for", units.parse_duration)
    limit = _parsed(max_size, "--max-size", units.parse_size)
    if age is None and limit is None:
        age = DEFAULT_UNUSED_FOR
    _, remote = _settings_and_remote()
    progress = _RichProgress() if (sys.stderr.isatty() and not as_json and not dry_run) else None
    try:
        report = collect(remote, unused_for=age, max_size=limit, dry_run=dry_run, progress=progress)
    finally:
        if progress is not None:
            progress.stop()
        remote.close()
    if as_json:
        echo_json(report.to_json())
    else:
        _print_gc_summary(report)
    if not report.ok:
        ctx.exit(1)


def _duration(seconds: float) -> str:
    """``30d`` rather than ``4w2d`` for whole days, as people write them."""
    days, rest = divmod(seconds, 86400)
    return f"{int(days)}d" if days and not rest else units.format_duration(seconds)


def _print_gc_summary(report: GcReport) -> None:
    size, ago = units.format_size, units.format_ago
    if report.dry_run:
        for i in report.deleted:
            what = f"{i.crate} {i.key[:16]}" if i.kind == "archive" else f"{i.crate} _mkeys/{i.key[:16]}"
            click.echo(f"  would delete {what}  {size(i.obj.size)}  ({i.rule}; written {ago(i.obj.age)})")
    rules = {"unused": f"archives unused for {_duration(report.unused_for or 0)}",
             "size": "archives over --max-size, least recently used first",
             "mkeys": "_mkeys objects naming only deleted archives"}
    verb = "would delete" if report.dry_run else "deleted"
    for rule, words in rules.items():
        if (rule == "unused" and report.unused_for is None) or (rule == "size" and report.max_size is None):
            continue
        objects, nbytes = report.totals(rule)
        click.echo(f"{verb} {_plural(objects, 'object')} ({size(nbytes)}): {words}")
    limit = f" (max {size(report.max_size)})" if report.max_size is not None else ""
    click.echo(f"remote {report.where}: {size(report.before_bytes)} in "
               f"{_plural(report.before_objects, 'object')} -> {size(report.remaining_bytes)} in "
               f"{_plural(report.remaining_objects, 'object')}{limit}")
    if report.mkeys_changed:
        click.echo(f"kept {_plural(report.mkeys_changed, '_mkeys object')} that changed while gc ran "
                   "(an upload announced a key there)")
    if report.ignored_objects:
        click.echo(f"left alone {_plural(report.ignored_objects, 'object')} ({size(report.ignored_bytes)}) "
                   "whose names are not kache's ({crate}/{key}.tar.zst or {crate}/_mkeys/{mkey}.json)")
    if report.over_max_size:
        kept = sum(i.obj.size for i in report.kept_recent)
        why = (f": {_plural(len(report.kept_recent), 'archive')} ({size(kept)}) written in the last "
               f"{_duration(report.grace)} were kept (an upload may be running); run gc again later"
               if report.kept_recent else "")
        over = report.remaining_bytes - (report.max_size or 0)
        warn(f"the remote is still {size(over)} over --max-size{why}")
    if report.failures:
        click.echo(f"failed: {len(report.failures)}")
        for f in report.failures:
            click.echo(f"  {f.message}")


COMMANDS: list[click.Command] = [sync, remote_group]
