"""The reader of ar archives and ELF objects, on files made by hand with struct (every
layout: GNU and BSD names, thin archives, 32/64-bit, both byte orders, extended section
numbering) and by the system's cc and ar; cut or damaged, it gives up with Malformed."""

from __future__ import annotations

import shutil
import struct
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from kache.engine import objfile
from kache.engine.objfile import Malformed

LONG = b"a-member-name-longer-than-fifteen.o"


def header(name: bytes, size: int) -> bytes:
    return name.ljust(16) + b"0".ljust(12) + b"0".ljust(6) + b"0".ljust(6) + b"644".ljust(8) + \
        str(size).encode().ljust(10) + b"`\n"


def gnu_ar(files: list[tuple[bytes, bytes]], index: bytes | None = None, thin: bool = False) -> bytes:
    """A GNU archive (or thin archive) of ``files``: names of more than 15 bytes in a
    ``//`` table, odd sizes padded."""
    table, names = b"", []
    for name, _ in files:
        if len(name) > 15 or thin and name.startswith(b"/"):
            names.append(b"/%d" % len(table))
            table += name + b"/\n"
        else:
            names.append(name + b"/")
    out = objfile.THIN_MAGIC if thin else objfile.AR_MAGIC
    specials = ([(b"/", index)] if index is not None else []) + ([(b"//", table)] if table else [])
    for name, body in specials:
        out += header(name, len(body)) + body + b"\n" * (len(body) & 1)
    for name, (_, body) in zip(names, files, strict=True):
        out += header(name, len(body))
        if not thin:
            out += body + b"\n" * (len(body) & 1)
    return out


def bsd_ar(files: list[tuple[bytes, bytes]]) -> bytes:
    """A BSD archive: a ``__.SYMDEF`` index, every name leading its member's bytes."""
    out = objfile.AR_MAGIC
    for name, body in [(b"__.SYMDEF", b"\x00" * 8), *files]:
        padded = name + b"\0" * (-len(name) % 8)
        member = padded + body
        out += header(b"#1/%d" % len(padded), len(member)) + member + b"\n" * (len(member) & 1)
    return out


def gnu_index(symbols: list[bytes], wide: bool = False) -> bytes:
    width = 8 if wide else 4
    return len(symbols).to_bytes(width, "big") + b"\x00" * width * len(symbols) + b"".join(s + b"\0" for s in symbols)


def elf(wide: bool, big: bool, sections: list[tuple[bytes, int, bytes]], extended: bool = False) -> bytes:
    """A relocatable ELF object of ``sections`` (name, type, bytes) after the null
    section, the names' table last; with ``extended``, its count and index are in
    section 0, as an object of more than 65279 sections has them."""
    o = ">" if big else "<"
    ehsize, shentsize = (64, 64) if wide else (52, 40)
    shstrtab = b"\0" + b"".join(name + b"\0" for name, _, _ in sections) + b".shstrtab\0"
    body, entries, name_at = b"", [], 1
    for name, sh_type, data in [*sections, (b".shstrtab", 3, shstrtab)]:
        offset = ehsize + len(body)
        if sh_type != objfile.SHT_NOBITS:
            body += data
        entries.append((name_at, sh_type, 0, 0, offset, len(data), 0, 0, 1, 0))
        name_at += len(name) + 1
    shnum, shstrndx = len(entries) + 1, len(entries)
    zero = (0, 0, 0, 0, 0, shnum if extended else 0, shstrndx if extended else 0, 0, 0, 0)
    shoff = ehsize + len(body)
    fmt = o + ("IIQQQQIIQQ" if wide else "IIIIIIIIII")
    table = b"".join(struct.pack(fmt, *e) for e in [zero, *entries])
    ident = objfile.ELF_MAGIC + bytes([2 if wide else 1, 2 if big else 1, 1]) + b"\0" * 9
    counts = (0, 0xFFFF) if extended else (shnum, shstrndx)
    if wide:
        head = ident + struct.pack(o + "HHIQQQIHHHHHH", 1, 62, 1, 0, 0, shoff, 0, ehsize, 0, 0, shentsize, *counts)
    else:
        head = ident + struct.pack(o + "HHIIIIIHHHHHH", 1, 3, 1, 0, 0, shoff, 0, ehsize, 0, 0, shentsize, *counts)
    assert len(head) == ehsize
    return head + body + table


SECTIONS = [(b".text", 1, b"\x90" * 7), (b".bss", objfile.SHT_NOBITS, b"\0" * 32), (b".debug_str", 1, b"/home/x\0")]
SHSTRTAB = b"\0.text\0.bss\0.debug_str\0.shstrtab\0"


def read(data: objfile.Bytes, base: int = 0, end: int | None = None) -> list[tuple[bytes, int, bytes]]:
    elf_header = objfile.elf_header(data, base, end)
    return [(s.name, s.type, objfile.section_bytes(data, s, base, end))
            for s in objfile.section_headers(data, elf_header, base, end)]


def test_a_gnu_archive_names_its_members_short_and_long() -> None:
    files = [(b"a.o", b"odd"), (LONG, b"even"), (b"b.o", b"")]
    data = gnu_ar(files, index=gnu_index([b"f", b"g"]))
    members = list(objfile.members(data))
    assert [(m.name, m.kind) for m in members] == [(b"/", "index"), (b"//", "names"), (b"a.o", "file"),
                                                  (LONG, "file"), (b"b.o", "file")]
    assert [data[m.start:m.start + m.size] for m in members if m.kind == "file"] == [b for _, b in files]
    assert objfile.index_symbols(b"/", data[members[0].start:members[0].start + members[0].size]) == b"f\0g"
    assert objfile.index_symbols(b"/SYM64/", gnu_index([b"h"], wide=True)) == b"h"


def test_a_bsd_archive_names_lead_the_bytes() -> None:
    files = [(b"a.o", b"abc"), (LONG, b"\x7fELF...")]
    data = bsd_ar(files)
    members = list(objfile.members(data))
    assert [(m.name, m.kind) for m in members] == [(b"__.SYMDEF", "index"), (b"a.o", "file"), (LONG, "file")]
    assert [data[m.start:m.start + m.size] for m in members[1:]] == [b for _, b in files]


def test_a_thin_archive_names_files_it_does_not_hold() -> None:
    data = gnu_ar([(b"obj/a.o", b"x" * 100), (b"/abs/" + LONG, b"y" * 3)], index=gnu_index([b"f"]), thin=True)
    assert objfile.thin_members(data) == ["obj/a.o", "/abs/" + LONG.decode()]
    files = [m for m in objfile.members(data) if m.kind == "file"]
    assert [m.size for m in files] == [100, 3]  # the sizes of the files named
    assert objfile.thin_members(gnu_ar([(b"a.o", b"x")])) is None  # a regular archive
    assert objfile.thin_members(objfile.THIN_MAGIC) == []


@pytest.mark.parametrize("wide", [False, True], ids=["32", "64"])
@pytest.mark.parametrize("big", [False, True], ids=["le", "be"])
def test_elf_section_headers_in_every_class_and_byte_order(wide: bool, big: bool) -> None:
    data = elf(wide, big, SECTIONS)
    head = objfile.elf_header(data)
    assert (head.wide, head.order, head.type, head.ehsize) == (wide, ">" if big else "<", 1, 64 if wide else 52)
    assert head.shoff_field == ((0x28, 8) if wide else (0x20, 4))
    assert not head.extended
    assert read(data) == [(b"", 0, b""), (b".text", 1, b"\x90" * 7), (b".bss", objfile.SHT_NOBITS, b""),
                          (b".debug_str", 1, b"/home/x\0"), (b".shstrtab", 3, SHSTRTAB)]


@pytest.mark.parametrize("wide", [False, True], ids=["32", "64"])
def test_extended_numbering_is_read_from_section_0(wide: bool) -> None:
    plain, extended = elf(wide, False, SECTIONS), elf(wide, False, SECTIONS, extended=True)
    assert objfile.elf_header(extended).extended
    assert read(extended)[1:] == read(plain)[1:]


def test_an_object_inside_an_archive_or_a_file_reads_the_same(tmp_path: Path) -> None:
    obj = elf(True, False, SECTIONS)
    data = gnu_ar([(b"x", b"pad"), (b"obj.o", obj)])
    member = list(objfile.members(data))[-1]
    (tmp_path / "lib.a").write_bytes(data)
    with open(tmp_path / "lib.a", "rb") as f:
        view = objfile.FileView(f)
        assert len(view) == len(data)
        assert [(m.name, m.start, m.size) for m in objfile.members(view)] == \
            [(m.name, m.start, m.size) for m in objfile.members(data)]
        assert read(view, member.start, member.start + member.size) == read(obj)
    assert read(data, member.start, member.start + member.size) == read(obj)


def test_cut_archives_and_objects_give_up_with_malformed() -> None:
    for data in (gnu_ar([(b"a.o", b"odd"), (LONG, b"even")], index=gnu_index([b"f"])), bsd_ar([(LONG, b"abc")])):
        whole = [m.name for m in objfile.members(data)]
        for cut in range(len(data)):
            try:
                names = [m.name for m in objfile.members(data[:cut])]
            except Malformed:
                continue
            assert names == whole[:len(names)]  # a cut between members: a shorter archive
    for wide in (False, True):
        obj = elf(wide, True, SECTIONS)
        for cut in range(len(obj)):
            with pytest.raises(Malformed):
                read(obj[:cut])
        with pytest.raises(Malformed):  # the object runs past the member's end
            read(obj + b"pad", 0, len(obj) - 1)


@pytest.mark.parametrize("damage", [
    pytest.param(lambda d: d[:66] + b"``" + d[68:], id="header-end"),
    pytest.param(lambda d: d.replace(b"3         `", b"x         `", 1), id="size-not-a-number"),
    pytest.param(lambda d: d.replace(b"3         `", b"-60       `", 1), id="negative-size"),
    pytest.param(lambda d: d.replace(b"3         `", b"99        `", 1), id="past-the-end"),
    pytest.param(lambda d: b"!<arch> " + d[8:], id="magic"),
])
def test_damaged_archives_give_up(damage: Callable[[bytes], bytes]) -> None:
    data = gnu_ar([(b"a.o", b"odd")])
    with pytest.raises(Malformed):
        list(objfile.members(damage(data)))


def _patched(data: bytes, at: int, fmt: str, value: int) -> bytes:
    return data[:at] + struct.pack(fmt, value) + data[at + struct.calcsize(fmt):]


@pytest.mark.parametrize("damage", [
    pytest.param(lambda d: d[:4] + b"\x03" + d[5:], id="class"),
    pytest.param(lambda d: d[:5] + b"\x00" + d[6:], id="byte-order"),
    pytest.param(lambda d: _patched(d, 0x28, "<Q", 0), id="no-section-headers"),
    pytest.param(lambda d: _patched(d, 0x28, "<Q", 1 << 40), id="section-headers-past-the-end"),
    pytest.param(lambda d: _patched(d, 0x3A, "<H", 40), id="entries-too-small"),
    pytest.param(lambda d: _patched(d, 0x3E, "<H", 9), id="names-index-out-of-range"),
    pytest.param(lambda d: d[:-64 + 24] + struct.pack("<Q", 1 << 30) + d[-64 + 32:], id="names-past-the-end"),
    pytest.param(lambda d: d[:-64 + 32] + struct.pack("<Q", 3) + d[-64 + 40:], id="name-unterminated"),
])
def test_damaged_objects_give_up(damage: Callable[[bytes], bytes]) -> None:
    with pytest.raises(Malformed):
        read(damage(elf(True, False, SECTIONS)))
    with pytest.raises(Malformed):
        read(b"\x7fELF" + b"\x02\x01" + b"\0" * 40)  # a header cut short


@pytest.mark.skipif(not (shutil.which("cc") and shutil.which("ar")), reason="needs cc and ar")
def test_what_cc_and_ar_make_is_read(tmp_path: Path) -> None:
    for name in ("a", "a-rather-long-object-name"):
        (tmp_path / f"{name}.c").write_text(f"int {name.replace('-', '_')}(void) {{ return 1; }}\n")
        subprocess.run(["cc", "-g", "-c", f"{name}.c", "-o", f"{name}.o"], check=True, cwd=tmp_path)
    subprocess.run(["ar", "crs", "lib.a", "a.o", "a-rather-long-object-name.o"], check=True, cwd=tmp_path)
    data = (tmp_path / "lib.a").read_bytes()
    files = [m for m in objfile.members(data) if m.kind == "file"]
    assert [m.name for m in files] == [b"a.o", b"a-rather-long-object-name.o"]
    assert data[files[0].start:files[0].start + files[0].size] == (tmp_path / "a.o").read_bytes()
    names = [s.name for s in objfile.section_headers(data, objfile.elf_header(data, files[0].start),
                                                       files[0].start, files[0].start + files[0].size)]
    assert b".debug_info" in names and b".text" in names
    with open(tmp_path / "a.o", "rb") as f:
        assert objfile.elf_header(objfile.FileView(f)).type == 1


@pytest.mark.skipif(not (shutil.which("cc") and shutil.which("ar")), reason="needs cc and ar")
def test_a_thin_archive_lists_the_objects_it_names(tmp_path: Path) -> None:
    obj = tmp_path / "obj"
    obj.mkdir()
    for name in ("a", "a-rather-long-object-name"):
        (obj / f"{name}.c").write_text(f"int {name.replace('-', '_')}(void) {{ return 1; }}\n")
        subprocess.run(["cc", "-c", str(obj / f"{name}.c"), "-o", str(obj / f"{name}.o")], check=True)
    thin = tmp_path / "libthin.a"
    subprocess.run(["ar", "crsT", str(thin), "obj/a.o", str(obj / "a-rather-long-object-name.o")], check=True,
                   cwd=tmp_path)
    members = objfile.thin_members(thin.read_bytes())
    assert members is not None and len(members) == 2
    assert [Path(tmp_path, m).resolve() for m in members] == [obj / "a.o", obj / "a-rather-long-object-name.o"]
    assert objfile.thin_members(b"!<arch>\n") is None
    assert objfile.thin_members(thin.read_bytes()[:70]) is None  # cut inside a header
