"""``kache daemon`` (``status``), ``run``, ``start``, ``stop``, ``restart``, ``log``, ``install``, ``uninstall``,
``client``.

Thin over :mod:`kache.daemon.control` (the daemon from the outside),
:mod:`kache.daemon.server` (``run``) and :mod:`kache.daemon.service` (login services).
"""

from __future__ import annotations

import os
import time

import click

from kache import __version__, units
from kache import settings as settings_mod
from kache.cli.output import echo_json, warn
from kache.errors import KacheError
from kache.store import layout

__all__ = ["COMMANDS"]


def _settings(*, check: bool = False) -> settings_mod.Settings:
    """The effective settings, their warnings said; ``check``: refuse when caching is off
    (a daemon for a store the settings do not safely name)."""
    s = settings_mod.load_checked()
    for w in s.warnings:
        warn(w)
    if check and s.caching_off:
        from kache.errors import SettingsError

        raise SettingsError(s.caching_off)
    return s


def _root(s: settings_mod.Settings) -> str:
    return str(s.local_store)


def _home_short(path: str) -> str:
    home = os.path.expanduser("~").rstrip("/")
    return "~" + path[len(home):] if home and path.startswith(home + "/") else path


def _count(n: object, one: str, many: str | None = None) -> str:
    return f"{n} {one if n == 1 else many or one + 's'}"


NOT_RUNNING = 3
"""The exit status of `kache daemon status` when no daemon runs (LSB's "program is not running")."""
NOT_ANSWERING = 4
"""The exit status of `kache daemon status` when a daemon holds the pid file but does not
answer (stopped, wedged): LSB's "program or service status is unknown"."""

_platform_option = click.option("--platform", type=click.Choice(["linux", "macos"]), hidden=True,
                                help="Service manager to write for (default: this machine's).")


@click.group(invoke_without_command=True)
@click.option("--json", "as_json", is_flag=True, help="Print the status as JSON.")
@click.pass_context
def daemon(ctx: click.Context, as_json: bool) -> None:
    """Show the daemon's status; subcommands run, start, stop and install it.

    The daemon uploads new entries to the remote, fetches entries for builds and
    prefetches the crates of a workspace's Cargo.lock, and serves the hits of the
    native client (kache-client; without the daemon it hands every call to kache).
    Without a remote or the client it has nothing to do, and the cache works without
    it. The status exits 0 when the daemon runs (or is starting), 3 when it does not
    (the LSB convention).

    \b
    Example:
      kache daemon
      kache daemon --json
    """
    if ctx.invoked_subcommand is not None:
        if as_json:
            raise click.UsageError("--json applies to `kache daemon` alone (the status)")
        return
    _show_status(as_json)


@daemon.command("status")
@click.option("--json", "as_json", is_flag=True, help="Print the status as JSON.")
def status_(as_json: bool) -> None:
    """Show the daemon's status (the same as `kache daemon`).

    Exit status (the LSB convention of `service status`): 0 when it runs (or is
    starting), 3 when it is not running, 4 when it holds its pid file but does not
    answer (stopped, wedged).

    \b
    Example:
      kache daemon status --json
    """
    _show_status(as_json)


def _show_status(as_json: bool) -> None:
    from kache.daemon import control

    s = _settings()
    st = control.status(_root(s))
    stopped = not st.running  # state "stopped": nothing holds the pid file or is starting
    if as_json:
        echo_json(st.to_json())
    elif st.reply is None:
        if st.state == "starting":
            ago = f", since {units.format_duration(time.time() - st.since)}" if st.since is not None else ""
            click.echo(f"kache daemon: starting (pid {st.pid or '?'}{ago}; it does not answer yet)")
        elif st.running:
            if control.stopped_by_signal(st.pid):
                click.echo(f"kache daemon: stopped (pid {st.pid} was sent SIGSTOP or is under a debugger; "
                           "builds do not ask it)")
                click.echo(f"  {control.stopped_fix(st.pid)}")
            else:
                click.echo(f"kache daemon: not answering (pid {st.pid or '?'} holds the pid file)")
                click.echo("  see `kache daemon log`; `kache daemon restart` replaces it")
        else:
            click.echo("kache daemon: not running (start it with `kache daemon start`)")
        click.echo(f"  socket   {st.socket}")
        click.echo(f"  log      {st.log}")
    if stopped:
        raise SystemExit(NOT_RUNNING)
    if st.state == "not-answering":
        raise SystemExit(NOT_ANSWERING)
    if as_json or st.reply is None:
        return
    r = st.reply
    service = " as a service" if r.get("service") else ""
    click.echo(f"kache daemon: running{service} (pid {r.get('pid')}, up "
               f"{units.format_duration(float(r.get('uptime_s', 0)))}, version {r.get('version')})")
    click.echo(f"  uploads  {r.get('queue', 0)} pending, {r.get('uploads_done', 0)} done, "
               f"{_count(r.get('uploads_failed', 0), 'failed attempt')}")
    click.echo(f"  fetched  {_count(r.get('downloads', 0), 'entry', 'entries')} "
               f"({_count(r.get('prefetches', 0), 'prefetch', 'prefetches')} started)")
    remotes = [x for x in r.get("remotes") or [] if isinstance(x, dict)]
    if not remotes:
        click.echo("  remotes  none yet (each build brings the remote its settings name)")
    for i, x in enumerate(remotes):
        where = f" at {x['endpoint']}" if x.get("endpoint") else ""
        down = "; not answering: builds do not ask it for a minute" if x.get("down") else ""
        click.echo(f"  {'remotes' if i == 0 else '       '}  {x.get('url')}{where} (credentials from "
                   f"{x.get('credentials')}, access {x.get('access')}, {x.get('queue', 0)} upload(s) "
                   f"pending{down})")
    if "runner" in r:  # an older daemon has none
        runner = r.get("runner")
        click.echo(f"  runner   pid {runner} (runs the native client's misses)" if runner else
                   "  runner   not running (the native client's misses start kache; cache.daemon_misses)")
    click.echo(f"  socket   {r.get('socket')}")
    click.echo(f"  log      {r.get('log')}")
    if r.get("last_error"):
        click.echo(f"  last error: {r['last_error']}")
    if r.get("version") != __version__:
        warn(f"the daemon runs kache {r.get('version')}, this is kache {__version__}: it restarts itself when its "
             "code changes; otherwise `kache daemon stop && kache daemon start`")


@daemon.command()
@click.option("--detached", is_flag=True, hidden=True, help="Log to the file only (set by `start`).")
@click.option("--service", is_flag=True,
              help="Run as a service (systemd, launchd): never exit when idle, replace a daemon that a "
                   "build started before the service did, and stand by behind another service's.")
@click.option("--environment-file", type=click.Path(dir_okay=False), metavar="FILE",
              help="Read NAME=value lines (credentials) into the daemon's environment first, as systemd's "
                   "EnvironmentFile= does; never run as shell code (for launchd, which has no such key).")
def run(detached: bool, service: bool, environment_file: str | None) -> int:
    """Run the daemon in the foreground (what a service runs).

    Logs to stderr and to daemon.log in the store. Exits 0 at once when a daemon
    already runs for this store, and after cache.daemon_idle_timeout_secs idle
    (neither with --service).

    \b
    Example:
      KACHE_LOG=kache=debug kache daemon run
      kache daemon run --service      # ExecStart of a systemd user unit
    """
    from kache.daemon import server

    if environment_file:
        from kache.daemon.service import read_environment_file

        os.environ.update(read_environment_file(environment_file))
    s = _settings(check=True)
    return server.run(s, foreground=not detached, service=service)


@daemon.command()
@click.option("--wait/--no-wait", default=None,
              help="Return once the daemon answers, or say why it did not (the default), or at once.")
@click.option("--timeout", type=click.FloatRange(min=0.1), default=10.0, show_default=True, metavar="SECONDS",
              help="How long to wait for it to answer.")
@click.option("--from-build", is_flag=True, hidden=True,
              help="Started by the wrapper: drop the build's remote and credential variables; do not wait "
                   "(unless --wait).")
def start(wait: bool | None, timeout: float, from_build: bool) -> None:
    """Start the daemon in the background; return once it answers.

    A daemon already running is success. When it does not come up, says so with the
    end of its log (exit 1). It keeps your environment minus cargo's variables. It
    serves the remote each build asks for (the one that build's settings name, with its
    credentials), so one daemon serves shells with different remotes.

    \b
    Example:
      kache daemon start
      kache daemon start --no-wait
    """
    from kache.daemon import control

    s = _settings(check=True)
    if wait is None:
        wait = not from_build
    result = control.start(s, from_build=from_build, wait=timeout if wait else 0.0)
    service = " as a service" if result.service else ""
    if result.already_running and result.was_starting:
        if result.ready:
            click.echo(f"kache daemon was starting and answers now (pid {result.pid or '?'}{service})")
        else:
            click.echo(f"kache daemon is starting (pid {result.pid or '?'}; it does not answer yet)")
        return
    if result.already_running:
        click.echo(f"kache daemon is already running{service} (pid {result.pid or '?'})")
        return
    if result.ready:
        click.echo(f"kache daemon started (pid {result.pid}); log: {result.log}")
    else:
        click.echo(f"kache daemon starting (pid {result.pid}; `kache daemon status` says when it answers); "
                   f"log: {result.log}")


@daemon.command()
def stop() -> None:
    """Stop a running daemon (pending uploads stay queued on disk).

    Asks it over the socket and waits up to 5 s, then sends SIGTERM.

    \b
    Example:
      kache daemon stop
    """
    from kache.daemon import control

    result = control.stop(_root(_settings()))
    if not result.was_running:
        click.echo("kache daemon is not running")
        return
    click.echo(f"kache daemon stopped (pid {result.pid or '?'})"
               + (" with SIGTERM" if result.how == "SIGTERM" else ""))


@daemon.command()
def restart() -> None:
    """Stop the daemon and start it again; return once the new one answers.

    A daemon run by a service manager (`kache daemon install`, the Nix module) is
    restarted through it: systemctl --user restart kache.service, or launchctl
    kickstart -k on macOS. Without a running daemon, starts one.

    \b
    Example:
      kache daemon restart
    """
    from kache.daemon import control

    result = control.restart(_settings(check=True))
    how = f" with `{' '.join(result.command)}`" if result.command else ""
    if result.old_pid is None:
        click.echo(f"kache daemon was not running; started (pid {result.new_pid}); log: {result.log}")
        return
    click.echo(f"kache daemon restarted (pid {result.old_pid or '?'} → {result.new_pid or '?'}){how}")


@daemon.command()
@click.option("-f", "--follow", is_flag=True, help="Keep printing lines as they are written.")
@click.option("-n", "--lines", type=click.IntRange(min=0), default=20, show_default=True,
              help="How many of the last lines to print first.")
def log(follow: bool, lines: int) -> None:
    """Print the end of the daemon's log (daemon.log in the store).

    \b
    Example:
      kache daemon log -n 50
      kache daemon log -f
    """
    from kache.daemon import control

    path = layout.log_path(_root(_settings()))
    try:
        for line in control.tail(path, lines):
            click.echo(line)
    except FileNotFoundError:
        if not follow:
            raise KacheError(f"cannot read the daemon log: {path}: it does not exist (the daemon has not run "
                             "yet; `kache daemon start` starts it)") from None
    except OSError as e:
        raise KacheError(f"cannot read the daemon log: {path}: {e.strerror or e}") from None
    if follow:
        try:
            for line in control.follow(path):
                click.echo(line)
        except KeyboardInterrupt:
            pass


@daemon.command()
@click.option("--no-activate", is_flag=True, help="Only write the service file; do not enable or start it.")
@_platform_option
def install(no_activate: bool, platform: str | None) -> None:
    """Install the daemon as a systemd user service (Linux) or launchd agent (macOS).

    Writes ~/.config/systemd/user/kache.service or
    ~/Library/LaunchAgents/dev.kache.daemon.plist, then enables and starts it.
    Running it again updates the definition in place.

    \b
    Example:
      kache daemon install
      kache daemon install --no-activate
    """
    from kache.daemon import service

    s = _settings()
    platform = platform or service.current_platform()
    report = service.install(platform, activate=not no_activate, store_root=_root(s))
    verb = "wrote" if report.changed else "unchanged:"
    click.echo(f"{verb} {_home_short(report.path)}")
    for command in report.commands:
        click.echo(f"ran: {command}")
    for note in report.notes:
        warn(note)
    if no_activate:
        hint = ("systemctl --user daemon-reload && systemctl --user enable --now kache.service"
                if platform == "linux" else f"launchctl bootstrap gui/{os.getuid()} {report.path}")
        click.echo(f"not activated; to start it: {hint}")


@daemon.command()
@click.option("--no-activate", is_flag=True, help="Only remove the file; do not stop or disable the service.")
@_platform_option
def uninstall(no_activate: bool, platform: str | None) -> None:
    """Remove the daemon service (stopping and disabling it first).

    \b
    Example:
      kache daemon uninstall
    """
    from kache.daemon import service

    platform = platform or service.current_platform()
    report = service.uninstall(platform, activate=not no_activate)
    for command in report.commands:
        click.echo(f"ran: {command}")
    if report.changed:
        click.echo(f"removed {_home_short(report.path)}")
    else:
        click.echo(f"nothing to remove: {_home_short(report.path)} does not exist")
    for note in report.notes:
        warn(note)


@daemon.command()
@click.option("-o", "--output", type=click.Path(dir_okay=False), metavar="PATH",
              help="Where to write it (default: kache-client beside the kache program).")
@click.option("--rustc", metavar="PATH", help="The rustc to build it with (default: $RUSTC, else rustc on PATH).")
@click.option("--kache", "kache_path", metavar="PATH",
              help="The kache it hands what the daemon does not serve to (default: this one; a package "
                   "passes its own installed path).")
@click.option("--json", "as_json", is_flag=True, help="Print what was built as JSON.")
def client(output: str | None, rustc: str | None, kache_path: str | None, as_json: bool) -> None:
    """Build the native thin client, a faster RUSTC_WRAPPER while the daemon runs.

    A hit the daemon serves costs it about 3 ms, but a Python wrapper process spends
    20-25 ms starting before it can ask. The client is a small Rust program, built
    here with your rustc in a few seconds: it asks the daemon, prints the reply, and
    hands anything the daemon does not serve (no daemon, a miss, another store) to
    this kache. So it is always safe as cargo's wrapper, and never slower than kache
    by more than a look at the socket. It finds the daemon of the store configured
    when it runs (variable, user file, system file, default), as kache does.

    \b
    Example:
      kache daemon client
      export RUSTC_WRAPPER=~/.local/share/kache-venv/bin/kache-client
    """
    from kache.native import BuildError, build_client, default_output
    from kache.selfexec import kache_executable

    s = _settings(check=True)
    kache = kache_path or kache_executable()
    try:
        built = build_client(output or default_output(kache), kache, layout.socket_path(_root(s)), rustc)
    except BuildError as e:
        raise KacheError(str(e)) from None
    if as_json:
        echo_json(built.to_json())
        return
    click.echo(f"built {_home_short(built.path)} ({units.format_size(built.bytes)}, {built.seconds:.1f} s with "
               f"{built.rustc})")
    click.echo(f"  it asks the daemon at {_home_short(built.socket)}")
    click.echo(f"  and hands everything else to {_home_short(built.kache)}")
    if not s["cache.daemon_hits"]:
        where = s.sources["cache.daemon_hits"].where or "default"
        warn(f"cache.daemon_hits is off ({where}): the daemon serves no hits, so the client hands every call "
             "to kache")
    click.echo("use it as cargo's wrapper:")
    click.echo(f"  export RUSTC_WRAPPER={built.path}")
    click.echo("or for good, in ~/.cargo/config.toml:")
    click.echo(f'  [build]\n  rustc-wrapper = "{built.path}"')


COMMANDS: list[click.Command] = [daemon]
