"""The proof of portability: outputs searched for this machine's paths."""

from __future__ import annotations

from pathlib import Path

from blake3 import blake3

from kache.paths import Normalizer
from kache.wrapper import portable


def _norm() -> Normalizer:
    return Normalizer({"<CWD>": "/home/ann/src/ws", "<TARGET>": "/home/ann/src/ws/target",
                       "<HOME>": "/home/ann", "<TMP>": "/tmp"})


def test_a_path_is_found_and_pinned_to_its_longest_prefix(tmp_path: Path) -> None:
    f = tmp_path / "lib.rlib"
    data = b"\x00" * 100 + b"/home/ann/src/ws/app" + b"hello" + b"\x01" * 100
    f.write_bytes(data)
    scanner = portable.Scanner(_norm())
    assert scanner.hash_file(str(f)) == (blake3(data).hexdigest(), len(data))
    assert scanner.found == {"<CWD>"}


def test_a_clean_output_pins_nothing(tmp_path: Path) -> None:
    f = tmp_path / "lib.rlib"
    f.write_bytes(b"/kache/home/x ./src/lib.rs /cargo/build-dir/debug /home/bob")
    scanner = portable.Scanner(_norm())
    scanner.hash_file(str(f))
    assert scanner.found == set()


def test_a_path_across_a_chunk_boundary_is_found(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(portable, "_CHUNK", 64)
    f = tmp_path / "big"
    f.write_bytes(b"x" * 60 + b"/home/ann/.cache" + b"y" * 100)
    scanner = portable.Scanner(_norm())
    scanner.hash_file(str(f))
    assert scanner.found == {"<HOME>"}


def test_messages_are_searched_too() -> None:
    scanner = portable.Scanner(_norm())
    scanner.search(b'{"rendered":"note: /tmp/x"}')
    assert scanner.found == {"<TMP>"}
