"""The prepared call: one cacheable rustc call, its outputs and its cheap key.

:func:`prepare` turns a parsed :class:`~kache.engine.argv.RustcCall` into a :class:`PreparedCall`:
the normaliser of this machine's paths, the outputs rustc will write, and the cheap key
(``mkey``) over everything known before compiling — toolchain, arguments, externs, native
libraries, the keyed environment, extra inputs (:mod:`kache.engine.key` holds the recipe).
A call that cannot be cached raises :class:`Uncacheable` with the reason.
"""

from __future__ import annotations

import os
import time

TYPE_CHECKING = False  # typing costs ~11 ms to import; annotations are strings here

from kache._record import Record
from kache.engine import argv as argvmod
from kache.engine.envpolicy import key_env
from kache.engine.filehash import FileHasher, ThinArchiveError
from kache.engine.key import KEY_VERSION, KeyBuilder
from kache.engine.nativelibs import link_inputs, native_inputs
from kache.engine.toolchain import ToolchainError, identity
from kache.paths import Normalizer, find_target_dir, resolve
from kache.store import events

if TYPE_CHECKING:
    from collections.abc import Mapping
    from typing import Any

    from kache.store.store import Store

__all__ = ["PreparedCall", "Uncacheable", "prepare", "OUT_DIR_TOKEN"]

# Stands for this build's --out-dir in stored stdout/stderr (artifact notifications).
OUT_DIR_TOKEN = "${KACHE_OUT_DIR}"


class PreparedCall(Record):
    """Everything known about one cacheable call before compiling.

    ``outputs`` are the absolute paths rustc will write (all in out_dir); ``root`` is
    the workspace root, for events and reports.
    """

    __slots__ = ("rustc", "argv", "env", "cwd", "store", "norm", "hasher", "mkey", "components", "outputs", "root",
                 "stored_key", "keep_incremental", "snapshots", "umask", "missing_inputs", "key_args")
    _defaults = {"mkey": "", "components": dict, "outputs": list, "root": "", "stored_key": "",
                 "keep_incremental": False, "snapshots": False, "umask": None, "missing_inputs": list,
                 "key_args": list}
    rustc: argvmod.RustcCall
    """rustc's command line, parsed."""
    argv: list[str]
    env: Mapping[str, str]
    cwd: str
    store: Store
    norm: Normalizer
    hasher: FileHasher
    mkey: str
    components: dict[str, str]
    outputs: list[str]
    root: str
    stored_key: str
    keep_incremental: bool  # this compile runs with cargo's -C incremental
    snapshots: bool  # its incremental session is stored with the entry and restored on a hit
    umask: int | None  # the caller's, when it is not this process's (a hit the daemon serves)
    missing_inputs: list[str]  # declared extra input files that are not there (worth a warning)
    key_args: list[str]  # the arguments as the key holds them (paths normalised), kept for why-miss

    @property
    def out_dir(self) -> str:
        return os.path.join(self.cwd, self.rustc.out_dir or "")

    def build_umask(self) -> int:
        """The umask the build's own files get: the caller's (a hit the daemon serves), else
        this process's (two syscalls; the wrapper and the runner's child are single-threaded)."""
        if self.umask is not None:
            return self.umask
        mask = os.umask(0o077)
        os.umask(mask)
        return mask

    @property
    def crate(self) -> str:
        return self.rustc.crate_name or "?"

    @property
    def package(self) -> str | None:
        """cargo's package of this crate (CARGO_PKG_NAME): display data, never keyed here."""
        return self.env.get("CARGO_PKG_NAME") or None

    def event(self, outcome: str, started: float, **fields: Any) -> None:
        ev = {"t": round(time.time(), 3), "crate": self.crate, "outcome": outcome,
              "ms": round((time.monotonic() - started) * 1000, 1), "root": self.root}
        if self.crate.startswith("build_script_") and self.package:
            ev["package"] = self.package  # build scripts are shown by their package
        ev.update({k: v for k, v in fields.items() if v is not None})
        try:
            events.append(self.store.root, ev)
        except OSError:
            pass


def _crate_key(name: str) -> str:
    return name.replace("-", "_")


def _extra_inputs(settings_extra: Mapping[str, Any], crate: str) -> list[tuple[list[str], list[str]]]:
    out = []
    for name, spec in settings_extra.items():
        if name == "*" or _crate_key(name) == _crate_key(crate):
            if isinstance(spec, dict):
                out.append((list(spec.get("env", [])), list(spec.get("files", []))))
    return out


def prepare(rc: argvmod.RustcCall, argv: list[str], store: Store, env: Mapping[str, str],
            extra_inputs: Mapping[str, Any], salt: str, cwd: str | None = None) -> PreparedCall:
    """Compute the cheap key of a cacheable call (made in ``cwd``, default this process's)."""
    for arg in rc.args:
        # A NUL or an undecodable byte cannot be a path SQLite or the kernel takes: rustc decides.
        if "\0" in arg or not arg.isascii() and not events.utf8_encodable(arg):
            raise Uncacheable("unusual-argument")
    cwd = os.getcwd() if cwd is None else cwd
    raw_out_dir = os.path.join(cwd, rc.out_dir or "")
    out_dir = resolve(raw_out_dir)
    target_dir = find_target_dir(out_dir)
    norm = Normalizer.for_call(cwd, raw_out_dir, env, rc.src)
    c = PreparedCall(rc, argv, env, cwd, store, norm, FileHasher(store))
    c.root = os.path.dirname(target_dir) if target_dir else cwd
    outputs = [os.path.join(cwd, p) for p in argvmod.expected_outputs(rc)]
    for p in outputs:
        if resolve(os.path.dirname(p)) != out_dir:
            raise Uncacheable("output-path")
    c.outputs = outputs

    kb = KeyBuilder()
    kb.add("version", str(KEY_VERSION))
    chain = [rc.compiler, *rc.compiler_args_prefix]
    try:
        kb.add("toolchain", identity(store, chain, env, cwd))
    except ToolchainError as e:
        raise Uncacheable("compiler-identity") from e
    extern_paths: list[tuple[str, str]] = []
    for tok in argvmod.key_args(rc.args):
        text = norm.text(tok)
        c.key_args.append(text)
        kb.add("args", text)
    for name, path in rc.externs:
        if path:
            extern_paths.append((name, os.path.join(cwd, path)))
    libs, lib_dirs = native_inputs(rc, cwd, target_dir, argvmod.target_family(rc))
    linked = link_inputs(rc, argvmod.effective_crate_types(rc), cwd, env)
    to_hash = [p for _, p in extern_paths]
    if rc.target and rc.target.endswith(".json"):
        to_hash.append(os.path.join(cwd, rc.target))
    hashes = c.hasher.hashes(to_hash)
    # objects and archives, keyed so that a build script's C objects, which hold its
    # machine's paths in their debug strings, match across machines; thin archives by
    # their members
    native = [p for _, p in libs] + [p for _, files in lib_dirs for p in files] + [p for _, p in linked]
    try:
        hashes.update(c.hasher.native_hashes(native, norm))
    except ThinArchiveError as e:
        raise Uncacheable("native-library") from e
    for name, path in extern_paths:
        if hashes[path] is None:
            raise Uncacheable("missing-extern")
        kb.add(f"extern:{name}", hashes[path] or "")
    for spec, path in libs:
        kb.add(f"lib:{spec}", hashes[path] or "missing")
    for d, files in lib_dirs:
        listing = "".join(f"{os.path.basename(p)}\0{hashes[p] or 'unreadable'}\n" for p in files)
        kb.add(f"native-dir:{norm.path(d)}", listing)
    for label, path in linked:
        kb.add(label, hashes[path] or "unreadable")
    if rc.target and rc.target.endswith(".json"):
        kb.add("target-spec", hashes[os.path.join(cwd, rc.target)] or "missing")
    clippy = argvmod.is_clippy(chain)
    for name, value in key_env(env, clippy=clippy):
        kb.add(f"env:{name}", norm.text(value))
    if clippy:
        kb.add("clippy-conf", _clippy_config(c, env))
    kb.add("remap", norm.remap_text())
    if salt:
        kb.add("salt", salt)
    for names, files in _extra_inputs(extra_inputs, c.crate):
        for n in sorted(names):
            kb.add(f"extra-env:{n}", "\0unset" if n not in env else "=" + env[n])
        # Relative to the directory cargo runs rustc in: the workspace root for a member,
        # the package's own root for any other crate. The kernel resolves what is left.
        home = env.get("HOME") or os.path.expanduser("~")
        for f in files:
            path = os.path.join(cwd, home + f[1:] if f == "~" or f.startswith("~/") else f)
            kb.add(f"extra-file:{f}", _extra_file(c, path))
    c.mkey = kb.hexdigest()
    c.components = kb.components
    return c


def _extra_file(c: PreparedCall, path: str) -> str:
    """What a declared extra input holds: a file's blake3; for a directory, every file
    below it; for a glob pattern (``*``, ``?``, ``[``, ``**``), every file it matches; by
    path relative to it and content. "missing" (and a warning) when there is nothing."""
    if any(ch in path for ch in "*?["):
        import glob

        listing = sorted(p for p in glob.glob(path, recursive=True) if os.path.isfile(p))
        base = os.path.dirname(path.split("*")[0].split("?")[0].split("[")[0])
    elif os.path.isdir(path):
        listing = []
        for d, dirs, names in os.walk(path):
            dirs.sort()
            listing.extend(os.path.join(d, n) for n in sorted(names) if os.path.isfile(os.path.join(d, n)))
        base = path
    else:
        digest = c.hasher.hashes([path])[path]
        if digest is None:
            c.missing_inputs.append(path)
        return digest or "missing"
    if not listing:
        c.missing_inputs.append(path)
        return "missing"
    hashes = c.hasher.hashes(listing)
    return "".join(f"{os.path.relpath(p, base)}\0{hashes[p] or 'unreadable'}\n" for p in listing)


def _clippy_config(c: PreparedCall, env: Mapping[str, str]) -> str:
    """The clippy.toml clippy-driver would read for this call, by path and content, or
    "none": it looks in ``CLIPPY_CONF_DIR`` (else the package's directory) and each
    directory above, and takes the first ``.clippy.toml`` or ``clippy.toml`` it finds. A
    file clippy read is in the dep-info, but one that appears later would not be seen."""
    start = env.get("CLIPPY_CONF_DIR") or env.get("CARGO_MANIFEST_DIR") or "."
    d = os.path.realpath(os.path.join(c.cwd, start))
    while True:
        found = [os.path.join(d, n) for n in (".clippy.toml", "clippy.toml") if os.path.isfile(os.path.join(d, n))]
        if found:
            hashes = c.hasher.hashes(found)
            return "".join(f"{c.norm.path(p)}\0{hashes[p]}\n" for p in found)
        parent = os.path.dirname(d)
        if parent == d:
            return "none"
        d = parent


class Uncacheable(Exception):
    """Found while preparing: this call cannot be cached; the message is the reason."""

