"""The portable digest of native libraries, on objects and archives the system's own C
compiler, assembler and ar make (as a build script through cc-rs does)."""

from __future__ import annotations

import platform
import shutil
import subprocess
from pathlib import Path

import pytest

from kache.engine.objdigest import portable_digest
from kache.paths import Normalizer

pytestmark = pytest.mark.skipif(not (shutil.which("cc") and shutil.which("ar")), reason="needs cc and ar")

C_SOURCE = "int c_value(void) { return 40; }\nint helper(int x) { return x * 2; }\n"
ASM_SOURCE = ".text\n.globl asm_value\nasm_value:\n  mov $2, %eax\n  ret\n"


def build(machine: Path, c_source: str = C_SOURCE, flags: tuple[str, ...] = ()) -> tuple[Path, Normalizer]:
    """The library a build script of package ``pkg`` makes on a machine rooted at
    ``machine``: sources by absolute path, compiled with -g from the package's root, as
    cc-rs does. Returns the archive and the normaliser of rustc's call there."""
    pkg, out = machine / "registry" / "pkg-1.0.0", machine / "target" / "debug" / "build" / "pkg-1" / "out"
    (pkg / "c").mkdir(parents=True)
    out.mkdir(parents=True)
    (pkg / "c" / "value.c").write_text(c_source)
    objects = [out / "value.o"]
    subprocess.run(["cc", "-g", "-O1", *flags, "-c", str(pkg / "c" / "value.c"), "-o", str(objects[0])],
                   cwd=pkg, check=True)
    if platform.machine() == "x86_64":
        (pkg / "c" / "value.S").write_text(ASM_SOURCE)
        objects.append(out / "asm.o")
        subprocess.run(["cc", "-g", "-c", str(pkg / "c" / "value.S"), "-o", str(objects[1])], cwd=pkg, check=True)
    lib = out / "libpkg_c.a"
    subprocess.run(["ar", "crs", str(lib), *map(str, objects)], check=True)
    norm = Normalizer.for_call(str(pkg), str(machine / "target" / "debug" / "deps"), {"HOME": str(machine / "home")})
    return lib, norm


def digest(path: Path, norm: Normalizer) -> str | None:
    return portable_digest(path.read_bytes(), norm)


def test_the_same_library_built_under_other_paths_has_one_digest(tmp_path: Path) -> None:
    a, norm_a = build(tmp_path / "a")
    b, norm_b = build(tmp_path / "second-machine-with-a-longer-path")
    assert a.read_bytes() != b.read_bytes()  # the debug strings hold each machine's paths
    da, db = digest(a, norm_a), digest(b, norm_b)
    assert da is not None and da.startswith("portable-1:")
    assert da == db
    assert digest(a.parent / "value.o", norm_a) == digest(b.parent / "value.o", norm_b)


@pytest.mark.parametrize("other", [
    pytest.param("int c_value(void) { return 41; }\nint helper(int x) { return x * 2; }\n", id="code"),
    pytest.param("\n" + C_SOURCE, id="line-numbers"),
    pytest.param(C_SOURCE + 'const char *where(void) { return __FILE__; }\n', id="path-in-rodata"),
])
def test_any_other_difference_changes_the_digest(tmp_path: Path, other: str) -> None:
    """Code, debug information other than the machine's prefixes (a line shifted by a
    blank line), and a path outside the debug strings (``__FILE__`` in ``.rodata``) all
    count."""
    a, norm_a = build(tmp_path / "a", C_SOURCE if "__FILE__" not in other else other)
    b, norm_b = build(tmp_path / "bb", other)
    assert digest(a, norm_a) != digest(b, norm_b)


def test_compiler_flags_that_only_change_debug_info_count(tmp_path: Path) -> None:
    a, norm_a = build(tmp_path / "a")
    b, norm_b = build(tmp_path / "bb", flags=("-gdwarf-4",))
    assert digest(a, norm_a) != digest(b, norm_b)


def test_files_without_a_machine_path_or_not_understood_are_left_to_their_bytes(tmp_path: Path) -> None:
    lib, norm = build(tmp_path / "a")
    data = lib.read_bytes()
    elsewhere = Normalizer.for_call("/nowhere/pkg", "/nowhere/target/debug/deps",
                                    {"HOME": "/nowhere/home", "TMPDIR": "/nowhere/tmp"})
    assert portable_digest(data, elsewhere) is None  # no prefix of that machine inside
    assert portable_digest(b"not an object " + str(tmp_path).encode(), norm) is None
    # truncated or damaged: never an exception, the bytes decide
    for cut in (len(data) // 3, len(data) - 7):
        assert portable_digest(data[:cut], norm) is None or portable_digest(data[:cut], norm) != digest(lib, norm)
    obj = (lib.parent / "value.o").read_bytes()
    damaged = obj[:0x28] + b"\xff" * 8 + obj[0x30:]  # e_shoff far past the end
    assert portable_digest(damaged, norm) is None
