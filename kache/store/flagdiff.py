"""Which of rustc's flags differ between two entries, in words (for ``kache why-miss``).

An entry records its arguments as the key holds them (``meta["args"]``: paths
normalised, ``-C incremental`` and ``--diagnostic-width`` left out). Both lists are read
as options — ``--emit=dep-info,link`` and ``--emit dep-info,link`` alike, ``-C
opt-level=3`` as the option ``-C opt-level`` — and each option whose values differ is
named with its values before and after: "--emit changed: dep-info,metadata →
dep-info,metadata,link (cargo check vs cargo build)". Entries recorded before the
arguments were kept have only ``meta["emit"]`` to compare.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["flag_changes", "options"]

# rustc's options that take the next argument as their value (when not written --x=v)
_TAKES_VALUE = frozenset({
    "--crate-name", "--edition", "--crate-type", "--emit", "--cfg", "--check-cfg", "-L", "-l", "--extern",
    "--out-dir", "--target", "--cap-lints", "--error-format", "--json", "-o", "--print", "--remap-path-prefix",
    "--sysroot", "-A", "-W", "-D", "-F", "--allow", "--warn", "--deny", "--forbid", "--force-warn", "--explain",
    "--diagnostic-width", "-C", "--codegen", "-Z", "--env-set", "--color", "--cfg-value",
})
_SHORT_WITH_VALUE = ("-C", "-Z", "-L", "-l", "-A", "-W", "-D", "-F")

_WHAT_IT_IS = {
    "-C metadata": " (cargo's hash of the unit: profile, features, dependencies, target)",
    "-C extra-filename": " (follows -C metadata)",
    "-C opt-level": " (the profile: dev vs release, or opt-level in Cargo.toml)",
    "-C debuginfo": " (the profile's debug setting)",
    "--cfg": " (features, or cfgs from RUSTFLAGS or a build script)",
}


def options(args: list[str]) -> dict[str, list[str]]:
    """``args`` as option name → its values, in order (a flag without a value has "";
    the source file is the option ``source``)."""
    out: dict[str, list[str]] = {}
    i = 0
    while i < len(args):
        a = args[i]
        if a.startswith("--") and "=" in a:
            name, value = a.split("=", 1)
        elif a in _TAKES_VALUE and i + 1 < len(args):
            name, value = a, args[i + 1]
            i += 1
        elif len(a) > 2 and a[:2] in _SHORT_WITH_VALUE:
            name, value = a[:2], a[2:]
        elif a.startswith("-"):
            name, value = a, ""
        else:
            name, value = "source", a
        if name in ("-C", "--codegen", "-Z"):
            option, _, value = value.partition("=")
            name = f"{'-Z' if name == '-Z' else '-C'} {option}"
        out.setdefault(name, []).append(value)
        i += 1
    return out


def _shown(values: list[str]) -> str:
    return ", ".join(v if v else "(set)" for v in values) if values else "absent"


def _one(name: str, before: list[str], after: list[str]) -> str:
    """One option's change, in words."""
    note = _WHAT_IT_IS.get(name, "")
    if name == "--emit":
        was, now = ("link" in ",".join(before)), ("link" in ",".join(after))
        if was != now:
            note = " (cargo build vs cargo check)" if was else " (cargo check vs cargo build)"
    if not before:
        return f"{name} added: {_shown(after)}{note}" if any(after) else f"{name} added{note}"
    if not after:
        return f"{name} removed: {_shown(before)}{note}" if any(before) else f"{name} removed{note}"
    if len(before) == 1 and len(after) == 1:
        return f"{name} changed: {before[0]} → {after[0]}{note}"
    added = [v for v in after if v not in before]
    removed = [v for v in before if v not in after]
    if not added and not removed:
        return f"{name}: the same values in another order or number ({_shown(before)} → {_shown(after)})"
    parts = ([f"added {_shown(added)}"] if added else []) + ([f"removed {_shown(removed)}"] if removed else [])
    return f"{name}: {'; '.join(parts)}{note}"


def _strings(value: Any) -> list[str] | None:
    return value if isinstance(value, list) and all(isinstance(v, str) for v in value) else None


def flag_changes(nearest: Mapping[str, Any], latest: Mapping[str, Any]) -> tuple[list[str], bool]:
    """The flags that differ from the ``nearest`` entry's meta to the ``latest`` one's,
    in words, and whether that is the whole story (False: only ``--emit`` could be
    compared, the entries predate recorded arguments)."""
    before, after = _strings(nearest.get("args")), _strings(latest.get("args"))
    if before is not None and after is not None:
        old, new = options(before), options(after)
        names = [*new, *(n for n in old if n not in new)]
        emit_first = sorted(names, key=lambda n: n != "--emit")  # the usual one: check vs build
        return [_one(n, old.get(n, []), new.get(n, [])) for n in emit_first if old.get(n, []) != new.get(n, [])], True
    emit_before, emit_after = _strings(nearest.get("emit")), _strings(latest.get("emit"))
    if emit_before is not None and emit_after is not None and sorted(emit_before) != sorted(emit_after):
        return [_one("--emit", [",".join(emit_before)], [",".join(emit_after)])], False
    return [], False
