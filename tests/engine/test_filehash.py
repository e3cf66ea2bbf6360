"""kache.engine.filehash: blake3 of input files, memoised by stat only when safe."""

from __future__ import annotations

import os
import time
from pathlib import Path

from blake3 import blake3

from kache.engine.filehash import MIN_AGE_SECS, FileHasher
from kache.store.store import Store


def aged(path: Path, secs: float = 10 * MIN_AGE_SECS) -> None:
    """Make a file look written ``secs`` ago (its ctime stays now; see the memo rule)."""
    then = time.time() - secs
    os.utime(path, (then, then))


def test_hashes_are_blake3_and_missing_files_are_none(tmp_path: Path) -> None:
    f = tmp_path / "a.rs"
    f.write_bytes(b"fn a() {}\n")
    hasher = FileHasher(Store(str(tmp_path / "store")))
    got = hasher.hashes([str(f), str(tmp_path / "gone.rs")])
    assert got == {str(f): blake3(b"fn a() {}\n").hexdigest(), str(tmp_path / "gone.rs"): None}


def test_a_changed_file_is_hashed_again_by_a_new_hasher(tmp_path: Path) -> None:
    store = Store(str(tmp_path / "store"))
    f = tmp_path / "a.rs"
    f.write_bytes(b"one")
    aged(f)
    first = FileHasher(store)
    assert first.hashes([str(f)])[str(f)] == blake3(b"one").hexdigest()
    first.flush()
    f.write_bytes(b"two")  # a new mtime and ctime: the memo's stat no longer matches
    assert FileHasher(store).hashes([str(f)])[str(f)] == blake3(b"two").hexdigest()


def test_a_file_written_within_the_granularity_window_is_never_served_from_the_memo(tmp_path: Path) -> None:
    """ccache's race: written, hashed, written again within the same timestamp (mtime put
    back as it was): a memo keyed on mtime alone would keep the first hash. The memo skips
    files younger than MIN_AGE_SECS and is keyed on ctime too."""
    store = Store(str(tmp_path / "store"))
    f = tmp_path / "young.rs"
    f.write_bytes(b"one")
    hasher = FileHasher(store)
    hasher.hashes([str(f)])
    hasher.flush()
    st = os.stat(f)
    f.write_bytes(b"two")
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns))  # the same mtime as when it was hashed
    assert FileHasher(store).hashes([str(f)])[str(f)] == blake3(b"two").hexdigest()
