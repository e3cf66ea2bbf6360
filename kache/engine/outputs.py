"""Outputs that share an inode with a store blob, unlinked before rustc writes over them.

A hit hardlinks outputs to their blobs; rustc rewrites some outputs in place, which would
carry the write into the store. So before the real rustc runs — on a miss, or when kache
passes a call through — such outputs are removed (plain, unshared ones are left for rustc
and cargo). Standard library only: the wrapper's pass-through imports this and nothing
of the store.
"""

from __future__ import annotations

import os

__all__ = ["unlink_shared_outputs", "unlink_expected_outputs"]


def unlink_shared_outputs(paths: list[str]) -> None:
    """Remove the files among ``paths`` that have more than one link."""
    for p in paths:
        try:
            if os.lstat(p).st_nlink > 1:
                os.unlink(p)
        except FileNotFoundError:
            pass


def unlink_expected_outputs(call: object) -> None:
    """Before rustc runs as if kache were absent: unlink the outputs a parsed call
    (:class:`~kache.engine.argv.RustcCall`) will write that share an inode with a blob.
    Never raises."""
    try:
        from kache.engine import argv as argvmod

        unlink_shared_outputs([os.path.abspath(p) for p in argvmod.expected_outputs(call)])  # type: ignore[arg-type]
    except Exception:  # noqa: BLE001
        pass
