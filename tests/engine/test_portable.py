"""The proof of portability: outputs searched for this machine's paths."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from blake3 import blake3
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kache.engine import portable
from kache.paths import Normalizer


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


def _archive(tmp_path: Path, source: str) -> Path:
    """A static library of one C object compiled with debug info from an absolute path
    under tmp_path, as cc-rs compiles a build script's C code."""
    src = tmp_path / "c" / "x.c"
    src.parent.mkdir(exist_ok=True)
    src.write_text(source)
    obj = tmp_path / "x.o"
    lib = tmp_path / "libx.a"
    subprocess.run(["cc", "-g", "-c", str(src), "-o", str(obj)], check=True)
    subprocess.run(["ar", "rcs", str(lib), str(obj)], check=True)
    assert str(tmp_path).encode() in lib.read_bytes()  # the debug info names the source
    return lib


@pytest.mark.skipif(shutil.which("cc") is None or shutil.which("ar") is None, reason="needs cc and ar")
def test_paths_in_the_debug_info_of_c_objects_do_not_pin(tmp_path: Path) -> None:
    lib = _archive(tmp_path, "int x_value(void) { return 1; }\n")
    scanner = portable.Scanner(Normalizer({"<CWD>": str(tmp_path)}))
    scanner.hash_file(str(lib))
    assert scanner.found == set()


@pytest.mark.skipif(shutil.which("cc") is None or shutil.which("ar") is None, reason="needs cc and ar")
def test_a_path_in_the_data_of_c_objects_pins(tmp_path: Path) -> None:
    lib = _archive(tmp_path, f'const char *x_dir(void) {{ return "{tmp_path}/data"; }}\n')
    scanner = portable.Scanner(Normalizer({"<CWD>": str(tmp_path)}))
    scanner.hash_file(str(lib))
    assert scanner.found == {"<CWD>"}


def test_a_percent_encoded_path_pins(tmp_path: Path) -> None:
    """A proc macro that bakes a file:// URL of its package: the path, encoded."""
    norm = Normalizer({"<CWD>": "/home/ann/my dir/ws"})
    f = tmp_path / "lib.rmeta"
    f.write_bytes(b"file:///home/ann/my%20dir/ws/assets")
    scanner = portable.Scanner(norm)
    scanner.hash_file(str(f))
    assert scanner.found == {"<CWD>"}


# The search goes from slash to slash, and needle by needle where slashes are dense:
# whatever the data, it finds what a plain search for every spelling at every offset finds.

_TABLE = {"<CWD>": "/home/ann/src/ws", "<TARGET>": "/home/ann/src/ws/target", "<HOME>": "/home/ann",
          "<TMP>": "/tmp", "<CARGO>": "/ws/c"}


def _reference(norm: Normalizer, data: bytes) -> set[str]:
    """Every offset where a spelling (or its percent-encoded form) starts; the longest one's sentinel."""
    spellings = [(p.encode(), s) for p, s in norm.table]
    spellings += [(portable._percent_encoded(p), s) for p, s in spellings]
    found = set()
    for i in range(len(data)):
        here = [(len(p), s) for p, s in spellings if data.startswith(p, i)]
        if here:
            found.add(max(here)[1])
    return found


_PIECES = st.sampled_from([b"/", b"//", b"/h", b"/ho", b"/home/an", b"/home/ann", b"/home/ann/src/ws",
                           b"/home/ann/src/ws/target", b"/tmp", b"/tm", b"/ws/c", b"/home/ann/src/ws/c",
                           b"/my%20dir", b"\x00", b"x", b"\xff/", b"ann"])


@given(pieces=st.lists(_PIECES, max_size=60), chunk=st.sampled_from([16, 64, 1 << 20]),
       table=st.sampled_from([_TABLE, {**_TABLE, "<TMP>": "/t"}, {"<CWD>": "/home/ann/my dir"}]))
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_the_search_finds_what_a_search_at_every_offset_finds(tmp_path: Path, monkeypatch, pieces: list[bytes],
                                                              chunk: int, table: dict[str, str]) -> None:
    monkeypatch.setattr(portable, "_CHUNK", chunk)
    norm = Normalizer(table)
    data = b"".join(pieces)
    f = tmp_path / "out"
    f.write_bytes(data)
    scanner = portable.Scanner(norm)
    assert scanner.hash_file(str(f)) == (blake3(data).hexdigest(), len(data))
    if chunk >= len(data):
        assert scanner.found == _reference(norm, data)
    else:  # a path cut by a chunk's end may also pin to a shorter prefix: more, never less
        assert scanner.found >= _reference(norm, data)
    messages = portable.Scanner(norm)
    messages.search(data)
    assert messages.found == _reference(norm, data)


def test_data_dense_with_slashes_is_searched_to_its_end(tmp_path: Path) -> None:
    """After its budget of slashes the search goes on needle by needle, from where it was."""
    data = b"/" * 5000 + b"/tmp/a" + b"/x" * 5000 + b"/home/ann/b"
    f = tmp_path / "paths.txt"
    f.write_bytes(data)
    scanner = portable.Scanner(Normalizer(_TABLE))
    scanner.hash_file(str(f))
    assert scanner.found == {"<TMP>", "<HOME>"}
