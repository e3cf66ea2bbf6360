"""What is compared between a build through kache and one without: a command's outputs,
normalised into named *aspects*. Standalone (standard library only), because the
reproduction scripts embed this file and run it as ``python3 observe.py VERB DIR``, where
DIR holds the captured ``rc``, ``out`` and ``err`` of cargo and, after a build, ``app_rc``
and ``app_out`` of the binary.

Aspects:

* ``cargo-exit``   cargo's exit status
* ``stdout``       what kd_app printed, and its exit status (``build``)
* ``diagnostics``  every compiler message cargo reported (``--message-format=json``), as
                   ``target: level [code] message``, sorted; cargo replays the messages of
                   fresh units, kache those of its hits (``build``, ``check``, ``clippy``)
* ``tests``        the test binaries' stdout (``-- --test-threads=1 --nocapture``), timings
                   blanked (``test``)
* ``kache-lines``  lines of cargo's stderr that mention kache, with the run directory and
                   the wrapper's own path (cargo names the wrapper command when a call
                   fails) left out: kache's own messages must never end up in what cargo
                   shows or replays (none on the plain side)

One documented difference is not a divergence (kache's README, "What you see": panic
locations follow cargo's trim-paths conventions, another package's files are
``<name>-<version>/src/lib.rs``): on the ``file_paths`` lines (``file!()`` and
``Location::caller()``) of stdout and tests, the *current* checkout's ``ext/kd_ext/``
(the dependency outside the workspace) reads as ``kd_ext-0.1.0/`` on both sides
(``--trim PREFIX=REPLACEMENT``; the harness's ``strict_paths`` turns it off). A path of
another checkout, or any other spelling, still differs.
"""

from __future__ import annotations

import json
import os
import re
import sys

_SUMMARY = re.compile(r"^(\d+ warnings? emitted|aborting due to .*|\d+ warnings? generated)$")
_FINISHED = re.compile(r"finished in [0-9.]+s")


def diagnostics(stdout: str) -> list[str]:
    out = []
    for line in stdout.splitlines():
        if not line.startswith("{"):
            continue
        try:
            msg = json.loads(line)
        except ValueError:
            continue
        if msg.get("reason") != "compiler-message":
            continue
        m = msg.get("message") or {}
        text = m.get("message", "")
        if _SUMMARY.match(text):
            continue
        code = (m.get("code") or {}).get("code") or "-"
        target = (msg.get("target") or {}).get("name", "?")
        span = next((sp for sp in m.get("spans") or [] if sp.get("is_primary")), None)
        where = f" @ {span.get('file_name')}:{span.get('line_start')}" if span else ""
        out.append(f"{target}: {m.get('level')} [{code}] {text}{where}")
    return sorted(out)


def trim(text: str, prefixes: list[tuple[str, str]]) -> str:
    if not prefixes:
        return text
    lines = []
    for line in text.split("\n"):
        if "file_paths " in line:
            for prefix, repl in prefixes:
                line = line.replace(prefix, repl)
        lines.append(line)
    return "\n".join(lines)


def kache_lines(err: str, root: str | None, wrapper: str | None = None) -> str:
    lines = set()
    for line in err.splitlines():
        if wrapper:
            line = line.replace(wrapper, "<wrapper>")
        if root:
            line = line.replace(root, "$R")
        if "kache" in line.lower():
            lines.add(line.strip())
    return "\n".join(sorted(lines))


def observe(verb: str, rc: int, out: str, app_rc: int | None = None, app_out: str | None = None,
            prefixes: list[tuple[str, str]] | None = None, err: str = "", root: str | None = None,
            wrapper: str | None = None) -> dict[str, str]:
    aspects = {"cargo-exit": str(rc), "kache-lines": kache_lines(err, root, wrapper)}
    if verb == "test":
        aspects["tests"] = trim(_FINISHED.sub("finished in Xs", out), prefixes or [])
        return aspects
    aspects["diagnostics"] = "\n".join(diagnostics(out))
    if verb == "build" and rc == 0:
        aspects["stdout"] = trim(f"{app_out}\n[kd_app exit {app_rc}]", prefixes or [])
    return aspects


def error_gist(out: str, err: str) -> str:
    """The first error of a failed cargo command, without paths, hashes and numbers: what
    tells one failure from another in a divergence's signature."""
    text = ""
    for line in out.splitlines():
        if line.startswith("{") and '"level":"error"' in line:
            try:
                text = json.loads(line)["message"]["message"]
                break
            except (ValueError, KeyError, TypeError):
                pass
    if not text:
        text = next((ln for ln in err.splitlines() if ln.startswith("error")), "")
    text = re.sub(r"\S*/\S*", "<path>", text)
    text = re.sub(r"\b[0-9a-f]{16}\b", "<hash>", text)
    text = re.sub(r"\d+", "N", text).replace(",", ";")
    return text[:70]


def labels(aspect: str, a: str, b: str) -> list[str]:
    """Short names of what differs between two values of one aspect: the facet labels of
    kd_app's lines (``manifest_dir``, ``c``, ``kd_lib0:V``…), the diagnostic codes, the
    tests."""
    la, lb = a.splitlines(), b.splitlines()
    diff = sorted(set(la) ^ set(lb))
    out = set()
    for line in diff:
        if aspect == "kache-lines":
            out.add("kache")
        elif aspect == "diagnostics":
            m = re.match(r"^(\S+): (\S+) \[(\S+)\]", line)
            side = "+" if line in la else "-"  # + only through kache, - only without
            out.add(f"{side}{m.group(3) if m else line[:40]}")
        elif aspect == "cargo-exit":
            out.add(f"kache {a.strip()}, plain {b.strip()}")
        else:
            s = line.strip()
            if s.startswith("[kd_app exit"):
                out.add("exit")
            elif s.startswith("test ") and " ... " in s:
                out.add("test:" + s.split()[1])
            elif s.startswith("kd_lib") and ":" in s:
                out.add(s.split(":")[0] + ":V")
            elif s.startswith(("total=", "test result:")):
                out.add(s.split("=")[0].split(":")[0])
            elif s:
                out.add(s.split()[0].rstrip(":="))
    return sorted(out)


def _read(d: str, name: str) -> str | None:
    p = os.path.join(d, name)
    if not os.path.exists(p):
        return None
    with open(p, encoding="utf-8", errors="replace") as f:
        return f.read()


def main(argv: list[str]) -> int:
    verb, d = argv[1], argv[2]
    prefixes = [tuple(a[len("--trim="):].split("=", 1)) for a in argv[3:] if a.startswith("--trim=")]
    root = next((a[len("--root="):] for a in argv[3:] if a.startswith("--root=")), None)
    wrapper = next((a[len("--wrapper="):] for a in argv[3:] if a.startswith("--wrapper=")), None)
    app_rc = _read(d, "app_rc")
    aspects = observe(verb, int((_read(d, "rc") or "-1").strip()), _read(d, "out") or "",
                      int(app_rc.strip()) if app_rc is not None else None, _read(d, "app_out"),
                      prefixes, _read(d, "err") or "", root, wrapper)  # type: ignore[arg-type]
    for name, value in aspects.items():
        print(f"== {name}")
        print(value)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
