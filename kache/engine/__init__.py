"""The cache engine: one cacheable rustc call, shared by the wrapper and the daemon.

``decide`` (what to do with a call, given the settings: the one place), ``argv`` (rustc's
command line, parsed), ``call`` (the prepared call and its cheap key; ``key`` holds the
recipe; ``envpolicy``, ``filehash``, ``toolchain``, ``nativelibs``, ``objdigest``,
``depinfo`` and ``portable`` what goes into it; ``objfile`` reads the ar archives and
ELF objects for ``objdigest`` and ``portable``), ``restore`` (look up, place the files,
replay), ``record`` (run rustc, store what it wrote), ``incremental`` (snapshots of
cargo's incremental state), ``hit`` (a hit served in the wrapper or the daemon),
``handle`` (the wrapper's whole path) and ``notices`` (what a call prints).
docs/architecture.md follows a call through them.
"""
