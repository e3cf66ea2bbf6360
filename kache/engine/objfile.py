"""Reading ar archives and ELF objects: where their members and sections lie.

Two parts of the engine read native object code: :mod:`kache.engine.objdigest` (a digest
of a native library with this machine's paths normalised) and
:mod:`kache.engine.portable` (which bytes of an output are ELF debug sections, not
searched for paths). What they know of the two formats is here:

- an ``ar`` archive (``!<arch>\\n``): after the magic, members, each a 60-byte header
  (name, dates, owner, mode, decimal size, ```\\n``) and its bytes, padded to an even
  offset. GNU names end in ``/``; a longer one is ``/<offset>`` into the ``//`` member,
  whose names end in ``/\\n``; the symbol index is ``/`` (or ``/SYM64/``). BSD writes
  ``#1/<length>`` with the name leading the member's bytes, and its index as
  ``__.SYMDEF``. A GNU thin archive (``!<thin>\\n``, ``ar crsT``) holds the index and the
  long names, and of every other member only its header: the member is the file it names;
- an ELF file: its header and its section headers, 32 or 64-bit, either byte order,
  with extended numbering (a section count or a name-table index too large for the
  header is in section 0).

What this reader is not sure of raises :class:`Malformed` (a ``ValueError``); every
caller gives up then. Both readers work on anything sliced as bytes are: ``bytes``, or
an open file through :class:`FileView`, read only where a slice asks. Standard library
only (this runs on the wrapper's miss path).
"""

from __future__ import annotations

import struct

TYPE_CHECKING = False  # typing costs ~11 ms to import; annotations are strings here

if TYPE_CHECKING:
    from collections.abc import Iterator
    from typing import BinaryIO, Protocol

    class Bytes(Protocol):
        """``bytes``, or a :class:`FileView`: sliced, it gives bytes."""

        def __len__(self) -> int: ...

        def __getitem__(self, span: slice, /) -> bytes: ...

__all__ = [
    "AR_MAGIC", "THIN_MAGIC", "ELF_MAGIC", "SHT_NOBITS", "Malformed", "FileView",
    "Member", "members", "thin_members", "index_symbols",
    "ElfHeader", "Section", "elf_header", "section_headers", "section_bytes",
]

AR_MAGIC = b"!<arch>\n"
THIN_MAGIC = b"!<thin>\n"
ELF_MAGIC = b"\x7fELF"
SHT_NOBITS = 8  # a section that occupies no bytes in the file (.bss)

_HEADER = 60  # an ar member header
_GNU_INDEX = (b"/", b"/SYM64/")
_BSD_INDEX = (b"__.SYMDEF", b"__.SYMDEF SORTED")
_LONG_NAMES = b"//"
_MAX_SECTIONS = 1 << 20
_SHN_XINDEX = 0xFFFF


class Malformed(ValueError):
    """The bytes are not an archive or object this reader knows well enough."""


class FileView:
    """An open binary file, read as bytes are sliced: ``view[start:stop]`` seeks and
    reads just those bytes (fewer at the end of the file)."""

    __slots__ = ("_f", "_size")

    def __init__(self, f: BinaryIO) -> None:
        self._f = f
        self._size = f.seek(0, 2)  # 2: from the end

    def __len__(self) -> int:
        return self._size

    def __getitem__(self, span: slice, /) -> bytes:
        self._f.seek(span.start)
        return self._f.read(max(0, span.stop - span.start))


# --------------------------------------------------------------------------- ar archives

class Member:
    """One member of an archive: its ``name`` (long and BSD names resolved, GNU's ending
    ``/`` removed; the index and the long-name table keep their own names), its ``kind``
    (``"index"``, ``"names"`` for GNU's long-name table, or ``"file"``), and where its
    bytes lie: ``size`` bytes from ``start`` (after a BSD name). A thin archive's files
    have no bytes in it: their ``size`` is that of the file named."""

    __slots__ = ("name", "kind", "start", "size")

    def __init__(self, name: bytes, kind: str, start: int, size: int) -> None:
        self.name, self.kind, self.start, self.size = name, kind, start, size


def members(data: Bytes) -> Iterator[Member]:
    """The members of an ar archive, regular or thin, in order; raises :class:`Malformed`
    on reaching a member it cannot read (a header cut short or damaged, a size that is
    not a number or runs past the end)."""
    magic = data[0:8]
    thin = magic == THIN_MAGIC
    if not thin and magic != AR_MAGIC:
        raise Malformed("not an ar archive")
    pos, end, long_names = len(magic), len(data), b""
    while pos < end:
        header = data[pos:pos + _HEADER]
        if len(header) < _HEADER or header[58:60] != b"`\n":
            raise Malformed("member header")
        name = header[:16].rstrip(b" ")
        size = _number(header[48:58])
        start = pos + _HEADER
        special = name in _GNU_INDEX or name == _LONG_NAMES
        if thin and not special:  # the member's bytes are in the file it names
            yield Member(_long_name(name, long_names).rstrip(b"/"), "file", start, size)
            pos = start
            continue
        stop = start + size
        if stop > end:
            raise Malformed("member past the end")
        pos = stop + (size & 1)
        if name.startswith(b"#1/") and not thin:  # BSD: the name leads the bytes
            n = min(_number(name[3:]), size)
            name = data[start:start + n].rstrip(b"\0")
            start, size = start + n, size - n
        if name in _GNU_INDEX or (name in _BSD_INDEX and not thin):
            yield Member(name, "index", start, size)
        elif name == _LONG_NAMES:
            long_names = data[start:stop]
            yield Member(name, "names", start, size)
        else:
            yield Member(_long_name(name, long_names).rstrip(b"/"), "file", start, size)


def thin_members(data: bytes) -> list[str] | None:
    """The member files a GNU thin archive (``ar crsT``) names, as written (relative to
    the archive's directory, or absolute), in order; None when ``data`` is not one or
    cannot be read. A thin archive holds no member's bytes, only where it lies: the
    linker (and rustc, bundling it into an rlib) reads those files."""
    if not data.startswith(THIN_MAGIC):
        return None
    try:
        return [m.name.decode("utf-8", "surrogateescape") for m in members(data) if m.kind == "file"]
    except ValueError:
        return None


def index_symbols(name: bytes, body: bytes) -> bytes:
    """The symbol names of an archive's index (the member ``name`` holding ``body``),
    without the member offsets; BSD's ``__.SYMDEF`` (offsets and names interleaved) as
    it is."""
    if name in _GNU_INDEX:
        width = 8 if name == b"/SYM64/" else 4
        count = int.from_bytes(body[:width], "big")
        return body[width + count * width:].rstrip(b"\0")
    return body


def _number(field: bytes) -> int:
    """A decimal field of a member header (blank: 0)."""
    try:
        n = int(field.decode("ascii").strip() or "0")
    except ValueError:  # UnicodeDecodeError is one too
        raise Malformed("a size that is not a number") from None
    if n < 0:
        raise Malformed("a negative size")
    return n


def _long_name(name: bytes, long_names: bytes) -> bytes:
    """``name``, or the long name ``/<offset>`` stands for."""
    if not (name.startswith(b"/") and name[1:].isdigit()):
        return name
    off = int(name[1:])
    stop = long_names.find(b"\n", off)
    return long_names[off:stop if stop >= 0 else len(long_names)]


# --------------------------------------------------------------------------- ELF

class ElfHeader:
    """What the ELF header says: ``wide`` (64-bit), ``order`` (``"<"`` or ``">"``, for
    struct), ``type`` (``e_type``; 1 is a relocatable object), ``ehsize``, where the
    section headers are (``shoff``, ``shentsize``, and ``shnum``, ``shstrndx`` as the
    header holds them: 0 and 0xFFFF mean they are in section 0, see ``extended``), and
    ``shoff_field``: (offset, length) of ``e_shoff`` in the header."""

    __slots__ = ("wide", "order", "type", "ehsize", "shoff", "shentsize", "shnum", "shstrndx", "shoff_field")

    def __init__(self, wide: bool, order: str, type: int, ehsize: int, shoff: int,
                 shentsize: int, shnum: int, shstrndx: int) -> None:
        self.wide, self.order, self.type, self.ehsize = wide, order, type, ehsize
        self.shoff, self.shentsize, self.shnum, self.shstrndx = shoff, shentsize, shnum, shstrndx
        self.shoff_field = (0x28, 8) if wide else (0x20, 4)

    @property
    def extended(self) -> bool:
        """Whether the section count or the names' index is in section 0."""
        return self.shnum == 0 or self.shstrndx == _SHN_XINDEX

    @property
    def section_format(self) -> str:
        """struct format of one section header (its size is the least ``shentsize``)."""
        return self.order + ("IIQQQQIIQQ" if self.wide else "IIIIIIIIII")


class Section:
    """One section header, its name resolved."""

    __slots__ = ("name", "type", "flags", "addr", "offset", "size", "link", "info", "addralign", "entsize")

    def __init__(self, name: bytes, fields: tuple[int, ...]) -> None:
        self.name = name
        (_, self.type, self.flags, self.addr, self.offset, self.size,
         self.link, self.info, self.addralign, self.entsize) = fields


def elf_header(data: Bytes, base: int = 0, end: int | None = None) -> ElfHeader:
    """The header of the ELF file at ``base`` in ``data`` (lying before ``end``)."""
    end = len(data) if end is None else end
    ident = data[base:min(base + 64, end)]
    if len(ident) < 52 or not ident.startswith(ELF_MAGIC) or ident[4] not in (1, 2) or ident[5] not in (1, 2):
        raise Malformed("ELF magic, class or byte order")
    wide = ident[4] == 2
    order = "<" if ident[5] == 1 else ">"
    try:
        e_type, = struct.unpack_from(order + "H", ident, 16)
        shoff, = struct.unpack_from(order + ("Q" if wide else "I"), ident, 0x28 if wide else 0x20)
        ehsize, _, _, shentsize, shnum, shstrndx = struct.unpack_from(order + "6H", ident, 0x34 if wide else 0x28)
    except struct.error:
        raise Malformed("ELF header cut short") from None
    return ElfHeader(wide, order, e_type, ehsize, shoff, shentsize, shnum, shstrndx)


def section_headers(data: Bytes, elf: ElfHeader, base: int = 0, end: int | None = None) -> list[Section]:
    """Every section header of the ELF file at ``base`` in ``data`` whose header is
    ``elf``, with its name; raises :class:`Malformed` when the table or the names do not
    lie inside the file (before ``end``) or do not add up."""
    end = len(data) if end is None else end
    fmt = elf.section_format
    size = struct.calcsize(fmt)
    if not elf.shoff or elf.shentsize < size:
        raise Malformed("section headers")
    at = base + elf.shoff
    shnum, shstrndx = elf.shnum, elf.shstrndx
    if elf.extended:  # the true values are in section 0's size and link
        first = data[at:at + size]
        if at + size > end or len(first) < size:
            raise Malformed("section 0 past the end")
        zero = struct.unpack(fmt, first)
        shnum = zero[5] if shnum == 0 else shnum
        shstrndx = zero[6] if shstrndx == _SHN_XINDEX else shstrndx
    if shnum == 0 or shnum > _MAX_SECTIONS:
        raise Malformed("section count")
    if not 0 <= shstrndx < shnum:
        raise Malformed("section names' index")
    stop = at + shnum * elf.shentsize
    table = data[at:stop]
    if stop > end or len(table) != stop - at:
        raise Malformed("section headers past the end")
    if elf.shentsize == size:
        raw = list(struct.iter_unpack(fmt, table))
    else:
        raw = [struct.unpack_from(fmt, table, i * elf.shentsize) for i in range(shnum)]
    names = section_bytes(data, Section(b"", raw[shstrndx]), base, end)
    out = []
    for fields in raw:
        off = fields[0]
        stop = names.find(b"\0", off)
        if stop < 0:
            raise Malformed("section name")
        out.append(Section(names[off:stop], fields))
    return out


def section_bytes(data: Bytes, section: Section, base: int = 0, end: int | None = None) -> bytes:
    """The bytes of ``section`` of the ELF file at ``base`` in ``data`` (none for a
    ``SHT_NOBITS`` one); raises :class:`Malformed` when they run past ``end``."""
    if section.type == SHT_NOBITS:
        return b""
    end = len(data) if end is None else end
    start = base + section.offset
    if start + section.size > end:
        raise Malformed("section past the end")
    return data[start:start + section.size]
