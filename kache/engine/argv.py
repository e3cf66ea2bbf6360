"""Parse one rustc command line as cargo hands it to a ``RUSTC_WRAPPER``.

What cargo runs
===============

kache's argv (without its own ``argv[0]``) is ``[compiler, *args]``::

    /…/bin/rustc --crate-name util --edition=2024 util/src/lib.rs --error-format=json
        --json=diagnostic-rendered-ansi,artifacts,future-incompat --crate-type lib
        --emit=dep-info,metadata,link -C embed-bitcode=no -C debuginfo=2
        --check-cfg 'cfg(docsrs,test)' --check-cfg 'cfg(feature, values())'
        -C metadata=467466d17e411364 -C extra-filename=-dbe8f10e3f5b4e8d
        --out-dir /ws/target/debug/deps -C incremental=/ws/target/debug/incremental
        -L dependency=/ws/target/debug/deps --extern pm=/ws/target/debug/deps/libpm-….so

Under ``cargo clippy`` the compiler is ``clippy-driver`` and its first argument is the
real rustc's path (``[clippy-driver, rustc, *args]``); that path is kept apart, in
``compiler_args_prefix``, so the call can be re-executed exactly. When a command line is
too long cargo moves the rustc arguments into an ``@argfile`` (one argument per line); the
compiler (and clippy's rustc path) stay on the command line.

Grammar (rustc's getopts rules)
===============================

* ``--name=value`` or ``--name value`` for long options; no abbreviations (``--cra`` is
  an error). A flag given a value (``--test=1``) is an error.
* ``-Xvalue`` or ``-X value`` for short options that take a value (C, L, l, o, W, A, D,
  F, Z). Short flags group: ``-vV`` is ``-v -V``; in ``-gCopt-level=3`` the first
  value-taking letter swallows the rest of the word.
* A value is taken from the next argument whatever it looks like (``-C -x``).
* ``-`` is a free argument (source on stdin); ``--`` ends the options.
* ``@path`` is replaced by the lines of ``path`` before anything else (not recursively).
  ``@shell:path`` means shell-quoted contents, but only after ``-Z shell-argfiles``.
* Codegen (``-C``) and unstable (``-Z``) option names accept ``_`` for ``-``.
* Single options given twice (``--crate-name``, ``--out-dir``…) are an error in rustc;
  here the last one wins. ``--cap-lints`` may repeat and the FIRST one wins.

Anything this module does not recognise is kept, in order, in ``RustcCall.other``; an
unknown flag that takes a separate value cannot be told apart from a flag followed by a
source file, so a second free argument is kept in ``inputs`` and makes the call
non-cacheable ("multiple-sources"): rustc itself refuses more than one input.

This module is on the hot path of every rustc call: stdlib only, no I/O except reading
``@argfiles``.
"""

from __future__ import annotations

import os
import sys

TYPE_CHECKING = False  # typing costs ~11 ms to import; annotations are strings here

if TYPE_CHECKING:
    from collections.abc import Mapping
    from typing import Any, ClassVar

from kache._record import Record
from kache.errors import KacheError

__all__ = [
    "ArgvError",
    "CACHEABLE_EMIT_KINDS",
    "PASSTHROUGH_REASONS",
    "RustcCall",
    "effective_crate_types",
    "expand_argfiles",
    "expected_outputs",
    "is_clippy",
    "key_args",
    "is_build_script",
    "parse",
    "passthrough_reason",
    "target_family",
    "without_incremental",
]


class ArgvError(KacheError):
    """The command line cannot be understood (an unreadable ``@argfile``, no compiler…)."""


# --- option tables -------------------------------------------------------------------

# Short options: letter -> canonical name. Value-taking ones swallow the rest of the word.
_SHORT_VALUE: dict[str, str] = {
    "C": "codegen", "L": "L", "l": "l", "o": "o", "W": "warn", "A": "allow",
    "D": "deny", "F": "forbid", "Z": "Z",
}
_SHORT_FLAG: dict[str, str] = {"g": "g", "O": "O", "v": "verbose", "V": "version", "h": "help"}

_LONG_VALUE: frozenset[str] = frozenset({
    "cfg", "check-cfg", "crate-type", "crate-name", "edition", "emit", "print", "out-dir",
    "explain", "target", "allow", "warn", "force-warn", "deny", "forbid", "cap-lints",
    "codegen", "extern", "sysroot", "error-format", "json", "color", "diagnostic-width",
    "remap-path-prefix", "remap-path-scope", "env-set",
})
_LONG_FLAG: frozenset[str] = frozenset({"help", "test", "version", "verbose"})

# Canonical flag name -> how it is recorded in RustcCall.flags.
_FLAG_SPELLING: dict[str, str] = {
    "g": "-g", "O": "-O", "verbose": "-v", "version": "-V", "help": "-h", "test": "--test",
}
_LINT_LEVELS: frozenset[str] = frozenset({"allow", "warn", "force-warn", "deny", "forbid"})
_LIB_PATH_KINDS: tuple[str, ...] = ("native", "crate", "dependency", "framework", "all")

#: ``--emit`` kinds whose outputs kache knows how to store and restore.
CACHEABLE_EMIT_KINDS: frozenset[str] = frozenset({"link", "metadata", "dep-info"})

#: Every reason ``passthrough_reason`` can return, in the order it checks them.
#: Stable strings: they are stats keys.
PASSTHROUGH_REASONS: tuple[str, ...] = (
    "version", "help", "print", "stdin", "no-source", "multiple-sources", "probe",
    "explain", "emit", "no-out-dir", "executable", "coverage", "target-cpu-native",
    "split-debuginfo", "unknown-argument",
)

_FALSE_WORDS: frozenset[str] = frozenset({"n", "no", "off", "false"})


# --- @argfiles -----------------------------------------------------------------------

def _read_argfile(path: str) -> str:
    try:
        # newline="": no universal-newline translation; rustc splits at \n only, so a
        # lone \r is part of an argument (``a\rb`` is one argument, not two).
        with open(path, encoding="utf-8", newline="") as f:
            return f.read()
    except UnicodeDecodeError as e:
        raise ArgvError(f"cannot read argument file: {path}: not valid UTF-8") from e
    except (OSError, ValueError) as e:  # ValueError: NUL or unencodable char in the path
        reason = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
        raise ArgvError(f"cannot read argument file: {path}: {reason}") from e


def _lines(text: str) -> list[str]:
    """Rust's ``str::lines``: split at ``\\n`` or ``\\r\\n``; a final line ending is optional."""
    parts = text.split("\n")
    if parts[-1] == "":
        parts.pop()
        return [p[:-1] if p.endswith("\r") else p for p in parts]
    last = parts.pop()
    return [p[:-1] if p.endswith("\r") else p for p in parts] + [last]


def expand_argfiles(args: list[str]) -> list[str]:
    """Replace every ``@path`` argument by the lines of that file, as rustc does.

    Each line is one argument (an empty line is an empty argument); lines read from a
    file are not expanded again. ``@shell:path`` after ``-Z shell-argfiles`` (shell
    quoting) is refused with ``ArgvError`` so that the caller runs rustc untouched.

    Raises:
        ArgvError: an argument file cannot be read or is not UTF-8.
    """
    if not any(a.startswith("@") for a in args):
        return list(args)
    out: list[str] = []
    shell_argfiles = False
    z_next = False

    def push(arg: str) -> None:
        # rustc inspects -Z options while expanding, so that -Zshell-argfiles applies to
        # the @shell: arguments after it.
        nonlocal shell_argfiles, z_next
        if z_next:
            z_next = False
            if arg == "shell-argfiles":
                shell_argfiles = True
        elif arg.startswith("-Z"):
            if arg == "-Z":
                z_next = True
            elif arg[2:] == "shell-argfiles":
                shell_argfiles = True
        out.append(arg)

    for arg in args:
        if not arg.startswith("@"):
            push(arg)
            continue
        path = arg[1:]
        if shell_argfiles and path.startswith("shell:"):
            raise ArgvError(f"unsupported argument file: {arg}: shell-quoted argfiles are not supported")
        for line in _lines(_read_argfile(path)):
            push(line)
    return out


# --- tokenizer -----------------------------------------------------------------------

class _Tok(Record):
    """One recognised piece of the command line.

    ``kind`` is "opt" (``name``/``value``), "pos" (a free argument), "bad" (not
    understood: unknown option, missing value…) or "end" (``--``). ``start``/``stop`` are
    the indices of the arguments it spans; ``group`` is set for members of a short-flag
    group such as ``-gO``.
    """

    __slots__ = ("kind", "name", "value", "start", "stop", "group",)
    _defaults: ClassVar[dict[str, Any]] = {
        "group": False,
    }

    kind: str
    name: str
    value: str | None
    start: int
    stop: int
    group: bool

def _tokenize(args: list[str]) -> list[_Tok]:
    toks: list[_Tok] = []
    n = len(args)
    i = 0
    ended = False
    while i < n:
        arg = args[i]
        if ended or arg == "-" or not arg.startswith("-"):
            toks.append(_Tok("pos", "", arg, i, i + 1))
            i += 1
            continue
        if arg == "--":
            toks.append(_Tok("end", "", arg, i, i + 1))
            ended = True
            i += 1
            continue
        if arg.startswith("--"):
            name, eq, inline = arg[2:].partition("=")
            if name in _LONG_VALUE:
                if eq:
                    toks.append(_Tok("opt", name, inline, i, i + 1))
                elif i + 1 < n:
                    toks.append(_Tok("opt", name, args[i + 1], i, i + 2))
                    i += 1
                else:
                    toks.append(_Tok("bad", "", arg, i, i + 1))
            elif name in _LONG_FLAG and not eq:
                toks.append(_Tok("opt", name, None, i, i + 1))
            else:
                toks.append(_Tok("bad", "", arg, i, i + 1))
            i += 1
            continue
        # A short option or a group of them.
        group: list[tuple[str, str | None]] = []
        needs_next = False
        ok = True
        j = 1
        while j < len(arg):
            ch = arg[j]
            if ch in _SHORT_VALUE:
                if j + 1 < len(arg):
                    group.append((_SHORT_VALUE[ch], arg[j + 1:]))
                else:
                    group.append((_SHORT_VALUE[ch], None))
                    needs_next = True
                break
            if ch in _SHORT_FLAG:
                group.append((_SHORT_FLAG[ch], None))
                j += 1
                continue
            ok = False
            break
        if not ok or (needs_next and i + 1 >= n):
            toks.append(_Tok("bad", "", arg, i, i + 1))
            i += 1
            continue
        stop = i + 2 if needs_next else i + 1
        grouped = len(group) > 1
        for name, value in group:
            if value is None and name in _SHORT_VALUE.values():
                value = args[i + 1]
            toks.append(_Tok("opt", name, value, i, stop, grouped))
        i = stop
    return toks


def _option_name(value: str) -> str:
    """``-C``/``-Z`` option name, normalised the way rustc looks it up (``_`` == ``-``)."""
    return value.partition("=")[0].replace("_", "-")


# --- the parsed call -----------------------------------------------------------------

class RustcCall(Record):
    """One rustc invocation, parsed. Lists keep command-line order.

    ``args`` (expanded) and ``raw_args`` (as received, ``@argfiles`` unexpanded) hold the
    whole command line after the compiler and its prefix; every other field is a view of
    ``args``, so nothing is lost by parsing.
    """

    __slots__ = ("compiler", "compiler_args_prefix", "args", "raw_args", "crate_name", "crate_types", "edition", "target", "emit", "out_dir", "output", "src", "inputs", "extra_filename", "metadata", "incremental", "cap_lints", "externs", "extern_args", "lib_paths", "libs", "cfgs", "check_cfgs", "codegen", "unstable", "lints", "flags", "error_format", "json", "color", "diagnostic_width", "sysroot", "explain", "is_test", "prints", "remap_path_prefixes", "remap_path_scope", "env_set", "other", "has_stdin_src",)
    _defaults: ClassVar[dict[str, Any]] = {
        "compiler_args_prefix": list,
        "args": list,
        "raw_args": list,
        "crate_name": None,
        "crate_types": list,
        "edition": None,
        "target": None,
        "emit": lambda: {"link": None},
        "out_dir": None,
        "output": None,
        "src": None,
        "inputs": list,
        "extra_filename": "",
        "metadata": list,
        "incremental": None,
        "cap_lints": None,
        "externs": list,
        "extern_args": list,
        "lib_paths": list,
        "libs": list,
        "cfgs": list,
        "check_cfgs": list,
        "codegen": list,
        "unstable": list,
        "lints": list,
        "flags": list,
        "error_format": None,
        "json": None,
        "color": None,
        "diagnostic_width": None,
        "sysroot": None,
        "explain": None,
        "is_test": False,
        "prints": list,
        "remap_path_prefixes": list,
        "remap_path_scope": None,
        "env_set": list,
        "other": list,
        "has_stdin_src": False,
    }

    compiler: str
    # The program to execute: rustc, or clippy-driver under ``cargo clippy``.
    compiler_args_prefix: list[str]
    # Arguments that belong to the compiler rather than to rustc (clippy's rustc path).
    args: list[str]
    # rustc's arguments, ``@argfiles`` expanded.
    raw_args: list[str]
    # rustc's arguments exactly as received (use these to re-execute).
    crate_name: str | None
    crate_types: list[str]
    # Every ``--crate-type`` value, comma lists split, as spelled (``lib`` stays ``lib``);
    # ``["bin"]`` when none is given and there is a source (rustc's default; a
    # ``#![crate_type]`` attribute in the source is not seen here).
    edition: str | None
    target: str | None
    emit: dict[str, str | None]
    # ``--emit`` kind -> explicit path or None; ``{"link": None}`` when absent.
    out_dir: str | None
    output: str | None
    # ``-o``.
    src: str | None
    # The first free argument: the crate root, ``-`` for stdin.
    inputs: list[str]
    # Every free argument (rustc accepts exactly one).
    extra_filename: str
    metadata: list[str]
    incremental: str | None
    cap_lints: str | None
    # The first ``--cap-lints`` (rustc ignores later ones).
    externs: list[tuple[str, str | None]]
    # ``--extern`` as (crate name, path or None); modifiers such as ``priv:`` dropped.
    extern_args: list[str]
    # The raw ``--extern`` values, modifiers included, parallel to ``externs``.
    lib_paths: list[tuple[str, str]]
    # ``-L`` as (kind, path); kind "all" when not given.
    libs: list[str]
    cfgs: list[str]
    check_cfgs: list[str]
    codegen: list[str]
    # Each ``-C``/``--codegen`` value (``opt-level=3``, ``prefer-dynamic``…).
    unstable: list[str]
    # Each ``-Z`` value.
    lints: list[tuple[str, str]]
    # (level, lint) from ``-A/-W/-D/-F`` and ``--allow/--warn/--force-warn/--deny/--forbid``.
    flags: list[str]
    # Value-less options, spelled ``-g``, ``-O``, ``-v``, ``-V``, ``-h``, ``--test``.
    error_format: str | None
    json: str | None
    # Every ``--json`` value, joined with commas.
    color: str | None
    diagnostic_width: str | None
    sysroot: str | None
    explain: str | None
    is_test: bool
    prints: list[str]
    # Each ``--print`` value (``cfg``, ``file-names``, ``sysroot=path``…).
    remap_path_prefixes: list[str]
    remap_path_scope: str | None
    env_set: list[str]
    other: list[str]
    # Arguments not understood, in order (unknown options, options missing a value, ``--``).
    has_stdin_src: bool

def is_clippy(chain: list[str]) -> bool:
    """Whether a compiler chain runs clippy-driver (whose lints depend on more than rustc's)."""
    return any(os.path.basename(p).startswith("clippy-driver") for p in chain)


def _is_program(arg: str, env: Mapping[str, str] | None) -> bool:
    """Whether rustc's first argument is really a program: the compiler that a workspace
    wrapper (``RUSTC_WORKSPACE_WRAPPER``: clippy-driver, sccache, …) runs. cargo's own
    calls start with an option (``--crate-name``, ``-vV``, ``-``), never a source file."""
    if not arg or arg[0] in "-@" or arg.endswith(".rs"):
        return False
    if os.path.basename(arg).startswith("rustc"):
        return True  # clippy-driver's (or any wrapper's) rustc, named as cargo names it
    if os.sep in arg:
        return os.path.isfile(arg) and os.access(arg, os.X_OK)
    from kache.paths import which

    return which(arg, (os.environ if env is None else env).get("PATH", os.defpath)) is not None


def parse(argv: list[str], env: Mapping[str, str] | None = None) -> RustcCall:
    """Parse ``[compiler, *args]`` (kache's argv without its own name); ``env`` (default
    this process's) gives the ``PATH`` a workspace wrapper's compiler is found on.

    Raises:
        ArgvError: argv is empty or an ``@argfile`` cannot be read. Nothing else, for
            any list of strings.
    """
    if not argv:
        raise ArgvError("no compiler given: kache expects `kache <rustc> <args…>`")
    compiler = argv[0]
    rest = argv[1:]
    prefix: list[str] = []
    # A compiler that is rustc itself takes no program; anything else (clippy-driver,
    # sccache, a wrapper script) may be a workspace wrapper with cargo's RUSTC after it.
    if rest and not os.path.basename(compiler).startswith("rustc") and _is_program(rest[0], env):
        prefix = [rest[0]]
        rest = rest[1:]
    args = expand_argfiles(rest)
    call = RustcCall(compiler=compiler, compiler_args_prefix=prefix, args=args, raw_args=list(rest))
    emit: dict[str, str | None] = {}
    json_parts: list[str] = []
    for tok in _tokenize(args):
        kind, name, value = tok.kind, tok.name, tok.value
        if kind == "pos":
            assert value is not None
            call.inputs.append(value)
            continue
        if kind != "opt":
            call.other.append(args[tok.start])
            continue
        if value is None:
            spelled = _FLAG_SPELLING[name]
            call.flags.append(spelled)
            if spelled == "--test":
                call.is_test = True
            continue
        if name == "codegen":
            call.codegen.append(value)
            opt = _option_name(value)
            setting = value.partition("=")[2]
            if opt == "extra-filename":
                call.extra_filename = setting
            elif opt == "metadata":
                call.metadata.append(setting)
            elif opt == "incremental":
                call.incremental = setting
        elif name == "Z":
            call.unstable.append(value)
        elif name == "L":
            for k in _LIB_PATH_KINDS:
                if value.startswith(k + "="):
                    call.lib_paths.append((k, value[len(k) + 1:]))
                    break
            else:
                call.lib_paths.append(("all", value))
        elif name == "l":
            call.libs.append(value)
        elif name == "o":
            call.output = value
        elif name == "out-dir":
            call.out_dir = value
        elif name in _LINT_LEVELS:
            call.lints.append((name, value))
        elif name == "crate-type":
            call.crate_types.extend(value.split(","))
        elif name == "crate-name":
            call.crate_name = value
        elif name == "edition":
            call.edition = value
        elif name == "emit":
            for part in value.split(","):
                k, eq, path = part.partition("=")
                emit[k] = path if eq else None
        elif name == "print":
            call.prints.append(value)
        elif name == "cfg":
            call.cfgs.append(value)
        elif name == "check-cfg":
            call.check_cfgs.append(value)
        elif name == "extern":
            call.extern_args.append(value)
            spec, eq, path = value.partition("=")
            crate = spec.partition(":")[2] if ":" in spec else spec
            call.externs.append((crate, path if eq else None))
        elif name == "target":
            call.target = value
        elif name == "cap-lints":
            if call.cap_lints is None:
                call.cap_lints = value
        elif name == "sysroot":
            call.sysroot = value
        elif name == "explain":
            call.explain = value
        elif name == "error-format":
            call.error_format = value
        elif name == "json":
            json_parts.append(value)
        elif name == "color":
            call.color = value
        elif name == "diagnostic-width":
            call.diagnostic_width = value
        elif name == "remap-path-prefix":
            call.remap_path_prefixes.append(value)
        elif name == "remap-path-scope":
            call.remap_path_scope = value
        elif name == "env-set":
            call.env_set.append(value)
        else:  # pragma: no cover - every name in the tables is handled above
            call.other.append(args[tok.start])
    if emit:
        call.emit = emit
    if json_parts:
        call.json = ",".join(json_parts)
    if call.inputs:
        call.src = call.inputs[0]
        call.has_stdin_src = call.src == "-"
        if not call.crate_types:
            call.crate_types = ["bin"]
    return call


# --- cacheability --------------------------------------------------------------------

def _codegen_settings(values: list[str]) -> dict[str, str | None]:
    """Last value of each ``-C``/``-Z`` option, by normalised name (None: no ``=``)."""
    out: dict[str, str | None] = {}
    for v in values:
        name, eq, setting = v.partition("=")
        out[name.replace("_", "-")] = setting if eq else None
    return out


def effective_crate_types(call: RustcCall) -> list[str]:
    """The crate types rustc will build: ``lib`` read as ``rlib``, duplicates dropped,
    and only ``bin`` for ``--test`` (rustc ignores ``--crate-type`` then)."""
    if call.is_test:
        return ["bin"]
    out: list[str] = []
    for t in call.crate_types:
        t = "rlib" if t == "lib" else t
        if t not in out:
            out.append(t)
    return out


def is_build_script(call: RustcCall) -> bool:
    """Whether this compiles a cargo build script (``build_script_*`` crate, a plain bin)."""
    return (
        call.crate_name is not None
        and call.crate_name.startswith("build_script_")
        and not call.is_test
        and effective_crate_types(call) == ["bin"]
    )


def target_family(call: RustcCall) -> str:
    """"elf", "apple", "windows-msvc", "windows-gnu" or "wasm": decides file names."""
    t = call.target
    if t is None:
        if sys.platform == "win32":
            return "windows-msvc"
        if sys.platform == "darwin":
            return "apple"
        return "elf"
    t = os.path.basename(t).lower()
    if "windows" in t:
        return "windows-gnu" if "gnu" in t else "windows-msvc"
    if "apple" in t or "darwin" in t:
        return "apple"
    if t.startswith("wasm"):
        return "wasm"
    return "elf"


def _wants_coverage(cg: dict[str, str | None], z: dict[str, str | None]) -> bool:
    for opts in (cg, z):
        if "instrument-coverage" in opts:
            v = opts["instrument-coverage"]
            if v is None or v.lower() not in _FALSE_WORDS:
                return True
    return "profile-generate" in cg or "profile-use" in cg or "profile" in z


def passthrough_reason(call: RustcCall, cache_executables: bool = False) -> str | None:
    """None when the call may be cached, else why not (one of ``PASSTHROUGH_REASONS``).

    Reasons are checked in the order of ``PASSTHROUGH_REASONS``, so a call gets the
    first that applies (cargo's ``- --crate-name ___ --print=…`` probe is "print").
    Build scripts count as cacheable even though they are executables; other bins,
    dylibs, cdylibs and ``--test`` harnesses only with ``cache_executables``. A bin that
    does not emit ``link`` (``cargo check``) produces no executable and is cacheable.
    """
    flags = call.flags
    if "-V" in flags or call.args in (["-v"], ["--verbose"]):
        return "version"
    if "-h" in flags or any(v == "help" for v in call.codegen + call.unstable) or any(
        lint == "help" for _, lint in call.lints
    ):
        return "help"
    if call.prints:
        return "print"
    if call.src == "-":
        return "stdin"
    if call.src is None:
        return "no-source"
    if len(call.inputs) > 1:
        return "multiple-sources"
    if call.crate_name == "___":
        return "probe"
    if call.explain is not None:
        return "explain"
    for kind, path in call.emit.items():
        if kind not in CACHEABLE_EMIT_KINDS or path == "-":
            return "emit"
    if call.out_dir is None:
        return "no-out-dir"
    if "link" in call.emit and not cache_executables and not is_build_script(call):
        if call.is_test or any(t in ("bin", "dylib", "cdylib") for t in effective_crate_types(call)):
            return "executable"
    cg = _codegen_settings(call.codegen)
    if _wants_coverage(cg, _codegen_settings(call.unstable)):
        return "coverage"
    if cg.get("target-cpu") == "native":
        return "target-cpu-native"
    if cg.get("split-debuginfo") == "unpacked" and target_family(call) != "apple":
        return "split-debuginfo"
    if call.other:
        # Not understood (an option rustc may know and kache does not, or one missing its
        # value): rustc decides, with cargo's arguments exactly as given.
        return "unknown-argument"
    return None


# --- rewriting -----------------------------------------------------------------------

def without_incremental(args: list[str]) -> list[str]:
    """``args`` without ``-C incremental=…`` in any spelling.

    Handles ``-C incremental=D`` (two arguments), ``-Cincremental=D``,
    ``--codegen incremental=D``, ``--codegen=incremental=D``, ``incremental`` spelled
    with ``_``, and a short-flag group ending in it (``-gCincremental=D`` keeps ``-g``).
    """
    return _without(args, diagnostic_width=False)


def key_args(args: list[str]) -> list[str]:
    """``args`` as the key holds them: without ``-C incremental`` (an incremental compile's
    outputs are as valid as any) and ``--diagnostic-width`` (cargo gives it only when its
    output is a terminal; it changes how messages wrap, nothing else), in any spelling."""
    return _without(args, diagnostic_width=True)


def _without(args: list[str], *, diagnostic_width: bool) -> list[str]:
    drop: set[int] = set()
    replace: dict[int, str] = {}
    toks = _tokenize(args)
    groups: dict[int, list[_Tok]] = {}  # start -> the members of a short-flag group there
    for tok in toks:
        if tok.group:
            groups.setdefault(tok.start, []).append(tok)
    for tok in toks:
        if diagnostic_width and tok.kind == "opt" and tok.name == "diagnostic-width":
            drop.update(range(tok.start, tok.stop))
            continue
        if not (tok.kind == "opt" and tok.name == "codegen" and tok.value is not None):
            continue
        if _option_name(tok.value) != "incremental":
            continue
        drop.update(range(tok.start, tok.stop))
        if tok.group:
            kept = [t for t in groups[tok.start] if t is not tok]
            letters = {v: k for k, v in _SHORT_FLAG.items()}
            replace[tok.start] = "-" + "".join(letters[t.name] for t in kept)
    out: list[str] = []
    for i, a in enumerate(args):
        if i in replace:
            out.append(replace[i])
        elif i not in drop:
            out.append(a)
    return out


# --- outputs -------------------------------------------------------------------------

def _file_stem(name: str) -> str:
    """Rust's ``Path::file_stem`` of a file name."""
    if name == "..":
        return name
    before, dot, _after = name.rpartition(".")
    if not dot or before == "":
        return name
    return before


def _with_extension(path: str, ext: str) -> str:
    """Rust's ``Path::with_extension`` (replace the last extension of the file name)."""
    head, base = os.path.split(path)
    return os.path.join(head, _file_stem(base) + "." + ext) if base else path


def _default_crate_name(call: RustcCall) -> str:
    src = call.src
    if src is None or src == "-":
        return "rust_out"
    return _file_stem(os.path.basename(src)).replace("-", "_")


def _debuginfo_on(call: RustcCall) -> bool:
    """Whether the last of ``-g`` / ``-C debuginfo=`` turns debug info on."""
    on = False
    for tok in _tokenize(call.args):
        if tok.kind != "opt":
            continue
        if tok.name == "g":
            on = True
        elif tok.name == "codegen" and tok.value is not None and _option_name(tok.value) == "debuginfo":
            on = tok.value.partition("=")[2] not in ("0", "none")
    return on


def expected_outputs(call: RustcCall) -> list[str]:
    """The files rustc writes for this call, as it names them (relative paths are
    relative to rustc's working directory), without duplicates.

    Covers the emit kinds kache caches: ``link``, ``metadata`` and ``dep-info``; other
    kinds are not listed (``passthrough_reason`` returns "emit" for them). Naming, for
    ``--crate-name c -C extra-filename=-h --out-dir D`` on Linux:

    ====================  =====================================================
    dep-info              ``D/c-h.d``
    metadata              ``D/libc-h.rmeta``
    link, lib / rlib      ``D/libc-h.rlib``
    link, dylib / cdylib  ``D/libc-h.so`` (``.dylib`` on Apple, ``c-h.dll`` on
    / proc-macro          Windows)
    link, staticlib       ``D/libc-h.a`` (``c-h.lib`` on Windows MSVC)
    link, bin / --test    ``D/c-h`` (``.exe`` on Windows, ``.wasm`` on wasm)
    ====================  =====================================================

    An explicit ``--emit kind=path`` is used as is. ``-o F`` with a single unnamed kind
    writes that kind to ``F``; with several, each goes to F's directory under its usual
    name except dep-info, named after F's stem (rustc 1.95 behaviour). With
    ``-C split-debuginfo=packed`` and debug info on (ELF targets), each linked bin,
    dylib, cdylib and proc-macro also gets ``<output>.dwp``.
    """
    crate_name = call.crate_name if call.crate_name is not None else _default_crate_name(call)
    extra = call.extra_filename
    crate_stem = crate_name + extra
    unnamed = sum(1 for p in call.emit.values() if p is None)
    single: str | None = None
    if call.output is not None:
        if unnamed <= 1:
            single = call.output
        directory = os.path.dirname(call.output)
        filestem = _file_stem(os.path.basename(call.output)) + extra
    else:
        directory = call.out_dir or ""
        filestem = crate_stem
    family = target_family(call)
    if family == "elf":
        dll, static, exe = ("lib", ".so"), ("lib", ".a"), ""
    elif family == "apple":
        dll, static, exe = ("lib", ".dylib"), ("lib", ".a"), ""
    elif family == "windows-msvc":
        dll, static, exe = ("", ".dll"), ("", ".lib"), ".exe"
    elif family == "windows-gnu":
        dll, static, exe = ("", ".dll"), ("lib", ".a"), ".exe"
    else:  # wasm
        dll, static, exe = ("", ".wasm"), ("lib", ".a"), ".wasm"

    def place(kind: str, default: str) -> str | None:
        path = call.emit.get(kind)
        if path is not None:
            return None if path == "-" else path
        if single is not None:
            return single
        return os.path.join(directory, default)

    out: list[str] = []

    def add(path: str | None) -> None:
        if path is not None and path not in out:
            out.append(path)

    if "dep-info" in call.emit:
        add(place("dep-info", filestem + ".d"))
    if "link" in call.emit:
        packed = (
            family == "elf"
            and _codegen_settings(call.codegen).get("split-debuginfo") == "packed"
            and _debuginfo_on(call)
        )
        for ctype in effective_crate_types(call):
            if ctype == "rlib":
                path = place("link", f"lib{crate_stem}.rlib")
            elif ctype in ("dylib", "cdylib", "proc-macro"):
                path = place("link", f"{dll[0]}{crate_stem}{dll[1]}")
            elif ctype == "staticlib":
                path = place("link", f"{static[0]}{crate_stem}{static[1]}")
            elif ctype == "bin":
                # Executables are named after the file stem (-o's stem when several kinds
                # share -o), and the suffix replaces an extension (Path::with_extension).
                path = place("link", filestem)
                if exe and path is not None and call.emit.get("link") is None and single is None:
                    path = _with_extension(path, exe[1:])
            else:
                continue
            add(path)
            if packed and ctype != "staticlib" and ctype != "rlib" and path is not None:
                add(path + ".dwp")
    if "metadata" in call.emit:
        add(place("metadata", f"lib{crate_stem}.rmeta"))
    return out
