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

if TYPE_CHECKING:
    from kache.paths import Normalizer

__all__ = ["portable_digest", "thin_members", "THIN_MAGIC", "VERSION"]

VERSION = "portable-1"

_AR_MAGIC = b"!<arch>\n"
THIN_MAGIC = b"!<thin>\n"
_ELF_MAGIC = b"\x7fELF"
_STRING_SECTIONS = (b".debug_str", b".debug_line_str")
_SHT_SYMTAB, _SHT_RELA, _SHT_NOBITS, _SHT_REL = 2, 4, 8, 9
_STT_SECTION = 3


class _Doubt(Exception):
    """The bytes are not what this parser knows well enough to canonicalise."""


_ERRORS = (_Doubt, struct.error, ValueError, IndexError, OverflowError)


def portable_digest(data: bytes, norm: Normalizer) -> str | None:
    """``VERSION:<blake3>`` of ``data`` (an ELF object or an ar archive) with machine
    prefixes in its debug strings normalised; None when ``data`` holds no machine prefix
    or is not such a file (key its bytes then)."""
    spellings = [p.encode("utf-8", "surrogateescape") for p, _ in norm.table]
    if not any(s in data for s in spellings):
        return None
    try:
        if data.startswith(_ELF_MAGIC):
            h = blake3(b"elf\0")
            _elf(data, norm, h)
        elif data.startswith(_AR_MAGIC):
            h = blake3(b"ar\0")
            _archive(data, norm, h)
        else:
            return None
    except _ERRORS:
        return None
    return f"{VERSION}:{h.hexdigest()}"


def thin_members(data: bytes) -> list[str] | None:
    """The member files a GNU thin archive (``ar crsT``) names, as written (relative to
    the archive's directory, or absolute), in order; None when ``data`` is not one or
    cannot be read. A thin archive holds no member's bytes, only where it lies: the
    linker (and rustc, bundling it into an rlib) reads those files."""
    if not data.startswith(THIN_MAGIC):
        return None
    pos, long_names, out = len(THIN_MAGIC), b"", []
    try:
        while pos < len(data):
            header = data[pos:pos + 60]
            if len(header) < 60 or header[58:60] != b"`\n":
                return None
            name = header[:16].rstrip(b" ")
            size = int(header[48:58].decode("ascii").strip() or "0")
            if name in (b"/", b"/SYM64/", b"//"):  # the index and the name table are inside
                if pos + 60 + size > len(data):
                    return None
                if name == b"//":
                    long_names = data[pos + 60:pos + 60 + size]
                pos += 60 + size + (size & 1)
                continue
            if name.startswith(b"/") and name[1:].isdigit():
                off = int(name[1:])
                stop = long_names.find(b"\n", off)
                name = long_names[off:stop if stop >= 0 else len(long_names)]
            out.append(name.rstrip(b"/").decode("utf-8", "surrogateescape"))
            pos += 60  # a member's bytes are not in a thin archive
    except (ValueError, UnicodeDecodeError):
        return None
    return out


def _field(h: blake3, tag: bytes, value: bytes) -> None:
    h.update(tag + b"\0" + b"%d" % len(value) + b"\0" + value)


def _archive(data: bytes, norm: Normalizer, h: blake3) -> None:
    pos = len(_AR_MAGIC)
    long_names = b""
    while pos < len(data):
        if pos + 60 > len(data) or data[pos + 58:pos + 60] != b"`\n":
            raise _Doubt("bad member header")
        header = data[pos:pos + 60]
        size = int(header[48:58].decode("ascii").strip() or "0")
        start, end = pos + 60, pos + 60 + size
        if end > len(data):
            raise _Doubt("member past the end")
        name = header[:16].rstrip(b" ")
        body = data[start:end]
        pos = end + (size & 1)
        if name.startswith(b"#1/"):  # BSD: the name leads the data
            n = int(name[3:].decode("ascii") or "0")
            name, body = body[:n].rstrip(b"\0"), body[n:]
        if name in (b"/", b"/SYM64/", b"__.SYMDEF", b"__.SYMDEF SORTED"):
            _field(h, b"index", _index_names(name, body))
            continue
        if name == b"//":
            long_names = body
            continue
        if name.startswith(b"/") and name[1:].isdigit():
            off = int(name[1:])
            stop = long_names.find(b"\n", off)
            name = long_names[off:stop if stop >= 0 else len(long_names)]
        name = name.rstrip(b"/")
        _field(h, b"member", name)
        if body.startswith(_ELF_MAGIC):
            sub = blake3(b"elf\0")
            try:
                _elf(body, norm, sub)
                _field(h, b"object", sub.digest())
                continue
            except _ERRORS:
                pass
        _field(h, b"bytes", blake3(body).digest())


def _index_names(name: bytes, body: bytes) -> bytes:
    """The symbol names of an archive's index, without the member offsets."""
    if name in (b"/", b"/SYM64/"):
        width = 8 if name == b"/SYM64/" else 4
        count = int.from_bytes(body[:width], "big")
        return body[width + count * width:].rstrip(b"\0")
    return body  # BSD's __.SYMDEF: offsets and names interleaved; keyed by its bytes


def _elf(data: bytes, norm: Normalizer, h: blake3) -> None:
    if len(data) < 52 or data[4] not in (1, 2) or data[5] not in (1, 2):
        raise _Doubt("ELF class or byte order")
    wide = data[4] == 2
    o = "<" if data[5] == 1 else ">"
    e_type, = struct.unpack_from(o + "H", data, 16)
    if e_type != 1:  # ET_REL only: a linked file holds string offsets in its code
        raise _Doubt("not a relocatable object")
    if wide:
        shoff_at, shoff_len = 0x28, 8
        shentsize, shnum, shstrndx = struct.unpack_from(o + "HHH", data, 0x3A)
        sh_fmt, sym_fmt, rela_fmt = o + "IIQQQQIIQQ", o + "IBBHQQ", o + "QQq"
    else:
        shoff_at, shoff_len = 0x20, 4
        shentsize, shnum, shstrndx = struct.unpack_from(o + "HHH", data, 0x2E)
        sh_fmt, sym_fmt, rela_fmt = o + "IIIIIIIIII", o + "IIIBBH", o + "IIi"
    ehsize, = struct.unpack_from(o + "H", data, 0x34 if wide else 0x28)
    shoff = int.from_bytes(data[shoff_at:shoff_at + shoff_len], "little" if o == "<" else "big")
    if shentsize != struct.calcsize(sh_fmt) or not shoff or shnum == 0 or shnum > 1 << 16:
        raise _Doubt("section headers")
    if shoff + shnum * shentsize > len(data):
        raise _Doubt("section headers past the end")
    _field(h, b"header", data[:shoff_at] + data[shoff_at + shoff_len:ehsize])
    sections = [struct.unpack_from(sh_fmt, data, shoff + i * shentsize) for i in range(shnum)]
    if shstrndx >= shnum:
        raise _Doubt("section names")

    def content(s: tuple[int, ...]) -> bytes:
        if s[1] == _SHT_NOBITS:
            return b""
        off, size = s[4], s[5]
        if off + size > len(data):
            raise _Doubt("section past the end")
        return data[off:off + size]

    shstr = content(sections[shstrndx])
    names = [shstr[s[0]:shstr.index(b"\0", s[0])] for s in sections]

    # the string sections, normalised: index -> (normalised bytes, offset -> string)
    strings: dict[int, bytes] = {}
    for i, (s, name) in enumerate(zip(sections, names)):
        if name in _STRING_SECTIONS and s[1] != _SHT_NOBITS:
            strings[i] = content(s)
    section_symbols: dict[int, int] = {}  # symbol index -> string section it stands for
    if strings:
        symtabs = [s for s in sections if s[1] == _SHT_SYMTAB]
        if len(symtabs) > 1:
            raise _Doubt("several symbol tables")
        if symtabs:
            table = content(symtabs[0])
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

    for i, (s, name) in enumerate(zip(sections, names)):
        # name, type, flags, addr, link, info, addralign, entsize; not offset (nor size)
        head = struct.pack("<QQQQQQQ", s[1], s[2], s[3], s[6], s[7], s[8], s[9])
        _field(h, b"section", name + b"\0" + head)
        if i in strings:
            # as a set: the assembler orders merged strings by its own hashing, and every
            # use of one goes through a relocation (hashed below as the string it names)
            _field(h, b"strings", b"\0".join(sorted({_norm(x, norm) for x in strings[i].split(b"\0")})))
            continue
        body = content(s)
        target = s[7]
        relocating_debug = (s[1] in (_SHT_RELA, _SHT_REL) and 0 < target < shnum
                            and names[target].startswith(b".debug"))
        if not relocating_debug or not section_symbols:
            _field(h, b"size", b"%d" % s[5])
            _field(h, b"bytes", blake3(body).digest())
            continue
        if s[1] == _SHT_REL:
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
