"""The key recipe, pinned.

Every other test checks that keys *differ* when an input does; these hold the exact
digests for fixed inputs, so that a change to how a key is made cannot slip in
unnoticed. Keys made before such a change no longer match the same inputs: every cache
(local stores, shared buckets) turns over. That is right only on purpose, with
``KEY_VERSION`` bumped — then update the values here in the same commit.
"""

from __future__ import annotations

from pathlib import Path

from kache.engine import argv as argvmod
from kache.engine.call import prepare
from kache.engine.key import KEY_VERSION, KeyBuilder, full_key
from kache.store.store import Store

FAKE_RUSTC = """#!/bin/sh
if [ "$1" = "-vV" ]; then
  printf 'rustc 1.95.0 (pinned 2026-04-14)\\nhost: x86_64-unknown-linux-gnu\\nrelease: 1.95.0\\n'
  exit 0
fi
if [ "$1" = "--print" ]; then cd "${0%/*}/sysroot" && pwd; exit 0; fi
exit 1
"""


def test_the_key_version() -> None:
    assert KEY_VERSION == 2


def test_the_byte_stream_of_a_key() -> None:
    """Length-prefixed label and value per field, values as UTF-8 with surrogateescape;
    per-label component digests, repeated labels folded."""
    kb = KeyBuilder()
    kb.add("version", "2")
    kb.add("args", "--crate-name")
    kb.add("args", "x")
    kb.add("env:FOO", "bar\udcff")
    assert kb.hexdigest() == "e65beecd8363029ed2becd851da96ff07687a4bf8f955f9a404cf286de30af24"
    assert kb.components == {"version": "813e9b729141e7f3", "args": "6c41ac2047d0223e",
                             "env:FOO": "4b6fc44fcc9efc88"}


def test_the_full_key() -> None:
    key, components = full_key("a" * 64, [("<CWD>/src/lib.rs", "b" * 64), ("<CARGO>/registry/x.rs", "c" * 64)],
                               [("OUT_DIR", "<TARGET>/x"), ("GONE", None)], [("<HOME>", ["/home/a"])])
    assert key == "353aca9675405a5d20640689bcd7936a4e416d10d184d156e61e682e667b2747"
    assert list(components) == ["mkey", "source:<CARGO>/registry/x.rs", "source:<CWD>/src/lib.rs",
                                "env-dep:GONE", "env-dep:OUT_DIR", "local:<HOME>"]


def test_the_cheap_key_of_a_whole_call_in_any_directory(tmp_path: Path) -> None:
    """A library compiled by a fixed stand-in rustc: the same cheap key wherever the
    workspace, HOME and temp dir are (paths go in as placeholders)."""
    keys = []
    for place in ("a", "a-much-longer-place/deeper"):
        base = tmp_path / place
        ws = base / "ws"
        (ws / "src").mkdir(parents=True)
        (ws / "target" / "debug" / "deps").mkdir(parents=True)
        (ws / "src" / "lib.rs").write_text("pub fn f() {}\n")
        rustc = base / "toolchain" / "rustc"
        (rustc.parent / "sysroot" / "lib").mkdir(parents=True)
        rustc.write_text(FAKE_RUSTC)
        rustc.chmod(0o755)
        argv = [str(rustc), "--crate-name", "pinned", "--edition=2021", "src/lib.rs", "--crate-type", "lib",
                "--emit=dep-info,metadata,link", "-C", "debuginfo=2", "-C", "metadata=0123456789abcdef",
                "--out-dir", str(ws / "target" / "debug" / "deps"), "-L", f"dependency={ws}/target/debug/deps"]
        env = {"PATH": "/usr/bin:/bin", "HOME": str(base / "home"), "TMPDIR": str(base), "CARGO_PKG_NAME": "pinned",
               "CARGO_PKG_VERSION": "0.1.0", "CARGO_MANIFEST_DIR": str(ws)}
        store = Store(str(base / "store"))
        try:
            keys.append(prepare(argvmod.parse(argv, env), argv, store, env, {}, "", cwd=str(ws)).mkey)
        finally:
            store.close()
    assert keys[0] == keys[1]
    assert keys[0] == "5305330ee53a342a37a2a682b00b925cec0dbea8ba50cd943e96b85db647a934"
