"""A digest of a native library that holds no path of this machine.

A build script that compiles C or assembly (cc-rs) gives the compiler absolute paths,
and the compiler writes them into the objects' debug information: the compilation
directory and the file names, as strings in ``.debug_str`` / ``.debug_line_str``. So a
static library in a build script's ``OUT_DIR`` differs from machine to machine whenever
the package's sources lie under another ``CARGO_HOME`` or checkout, although its code is
the same, and keying it by its bytes would make that crate, and every crate linking it,
miss on every other machine.

:func:`portable_digest` reads such a file as the linker does and hashes everything in
it, with the machine's prefixes in those string sections replaced by kache's
placeholders (the same table as the rest of the key):

- an ELF relocatable object (``ET_REL``): the ELF header but for where the section
  headers lie; every section's header but for its offset (and, for the two string
  sections, its size); every section's bytes, but the string sections as their
  normalised strings, and in relocations into debug sections the offset into a string
  section as the normalised string it points at (its offset moves when an earlier
  string's length differs);
- an ``ar`` archive: its members' names and digests in order (objects as above,
  anything else by its bytes) and the symbol names of its index; not the member headers'
  dates, owners and modes (nothing links by them) nor the index's offsets (they follow
  from the members).

Any other difference still changes the digest: code, data, symbols, a path in any other
section (``__FILE__`` in ``.rodata``), debug information other than those strings. When
the file holds no machine prefix at all, or is anything else (a linked ELF, Mach-O, COFF,
a file this parser doubts), the caller keys its bytes as before.

Standard library and blake3 only: this runs on the hot path, and only for the files of
``-l`` and build-script ``-L native=`` directories.
"""

from __future__ import annotations

import struct

TYPE_CHECKING = False  # typing costs ~11 ms to import; annotations are strings here

from blake3 import blake3

from kache.engine import objfile

if TYPE_CHECKING:
    from kache.paths import Normalizer

__all__ = ["portable_digest", "VERSION"]

VERSION = "portable-1"

_STRING_SECTIONS = (b".debug_str", b".debug_line_str")
_SHT_SYMTAB, _SHT_RELA, _SHT_REL = 2, 4, 9
_STT_SECTION = 3


class _Doubt(Exception):
    """The bytes are not what this parser knows well enough to canonicalise."""


_ERRORS = (_Doubt, struct.error, ValueError, IndexError, OverflowError)  # objfile.Malformed: a ValueError


def portable_digest(data: bytes, norm: Normalizer) -> str | None:
    """``VERSION:<blake3>`` of ``data`` (an ELF object or an ar archive) with machine
    prefixes in its debug strings normalised; None when ``data`` holds no machine prefix
    or is not such a file (key its bytes then)."""
    spellings = [p.encode("utf-8", "surrogateescape") for p, _ in norm.table]
    if not any(s in data for s in spellings):
        return None
    try:
        if data.startswith(objfile.ELF_MAGIC):
            h = blake3(b"elf\0")
            _elf(data, norm, h)
        elif data.startswith(objfile.AR_MAGIC):
            h = blake3(b"ar\0")
            _archive(data, norm, h)
        else:
            return None
    except _ERRORS:
        return None
    return f"{VERSION}:{h.hexdigest()}"


def _field(h: blake3, tag: bytes, value: bytes) -> None:
    h.update(tag + b"\0" + b"%d" % len(value) + b"\0" + value)


def _archive(data: bytes, norm: Normalizer, h: blake3) -> None:
    for member in objfile.members(data):
        body = data[member.start:member.start + member.size]
        if member.kind == "index":
            _field(h, b"index", objfile.index_symbols(member.name, body))
            continue
        if member.kind == "names":
            continue
        _field(h, b"member", member.name)
        if body.startswith(objfile.ELF_MAGIC):
            sub = blake3(b"elf\0")
            try:
                _elf(body, norm, sub)
                _field(h, b"object", sub.digest())
                continue
            except _ERRORS:
                pass
        _field(h, b"bytes", blake3(body).digest())


def _elf(data: bytes, norm: Normalizer, h: blake3) -> None:
    elf = objfile.elf_header(data)
    if elf.type != 1:  # ET_REL only: a linked file holds string offsets in its code
        raise _Doubt("not a relocatable object")
    if elf.extended or elf.shentsize != struct.calcsize(elf.section_format):
        raise _Doubt("section headers")
    wide, o = elf.wide, elf.order
    sym_fmt, rela_fmt = (o + "IBBHQQ", o + "QQq") if wide else (o + "IIIBBH", o + "IIi")
    sections = objfile.section_headers(data, elf)
    shoff_at, shoff_len = elf.shoff_field
    _field(h, b"header", data[:shoff_at] + data[shoff_at + shoff_len:elf.ehsize])
    shnum = len(sections)

    # the string sections, normalised: index -> (normalised bytes, offset -> string)
    strings: dict[int, bytes] = {}
    for i, s in enumerate(sections):
        if s.name in _STRING_SECTIONS and s.type != objfile.SHT_NOBITS:
            strings[i] = objfile.section_bytes(data, s)
    section_symbols: dict[int, int] = {}  # symbol index -> string section it stands for
    if strings:
        symtabs = [s for s in sections if s.type == _SHT_SYMTAB]
        if len(symtabs) > 1:
            raise _Doubt("several symbol tables")
        if symtabs:
            table = objfile.section_bytes(data, symtabs[0])
            step = struct.calcsize(sym_fmt)
            for k in range(len(table) // step):
                sym = struct.unpack_from(sym_fmt, table, k * step)
                info, shndx = (sym[1], sym[3]) if wide else (sym[3], sym[5])
                if info & 0xF == _STT_SECTION and shndx in strings:
                    section_symbols[k] = shndx

    def string_at(sec: int, off: int) -> bytes:
        raw = strings[sec]
        end = raw.find(b"\0", off)
        return _norm(raw[off:end if end >= 0 else len(raw)], norm)

    for i, s in enumerate(sections):
        # name, type, flags, addr, link, info, addralign, entsize; not offset (nor size)
        head = struct.pack("<QQQQQQQ", s.type, s.flags, s.addr, s.link, s.info, s.addralign, s.entsize)
        _field(h, b"section", s.name + b"\0" + head)
        if i in strings:
            # as a set: the assembler orders merged strings by its own hashing, and every
            # use of one goes through a relocation (hashed below as the string it names)
            _field(h, b"strings", b"\0".join(sorted({_norm(x, norm) for x in strings[i].split(b"\0")})))
            continue
        body = objfile.section_bytes(data, s)
        target = s.info
        relocating_debug = (s.type in (_SHT_RELA, _SHT_REL) and 0 < target < shnum
                            and sections[target].name.startswith(b".debug"))
        if not relocating_debug or not section_symbols:
            _field(h, b"size", b"%d" % s.size)
            _field(h, b"bytes", blake3(body).digest())
            continue
        if s.type == _SHT_REL:
            raise _Doubt("implicit addends into debug strings")
        step = struct.calcsize(rela_fmt)
        if len(body) % step:
            raise _Doubt("relocation table size")
        out = blake3()
        for r_offset, r_info, addend in struct.iter_unpack(rela_fmt, body):
            sym, rtype = (r_info >> 32, r_info & 0xFFFFFFFF) if wide else (r_info >> 8, r_info & 0xFF)
            sec = section_symbols.get(sym)
            if sec is None:
                out.update(struct.pack("<QQq", r_offset, r_info, addend))
            else:
                out.update(struct.pack("<QQ", r_offset, rtype) + b"S" + string_at(sec, addend) + b"\0")
        _field(h, b"relocations", out.digest())


def _norm(raw: bytes, norm: Normalizer) -> bytes:
    if b"/" not in raw:
        return raw
    return norm.text(raw.decode("utf-8", "surrogateescape")).encode("utf-8", "surrogateescape")
