"""How the wrapper is launched in the tests: the console script's code, and a one-file
library for rustc (what cargo would hand the wrapper)."""

from __future__ import annotations

import shutil
from pathlib import Path

# What the console script does (``-m kache`` would add runpy's imports: contextlib,
# functools, collections).
LAUNCH = "import sys; from kache.__main__ import main; sys.exit(main())"


def one_file_lib(tmp_path: Path, name: str) -> list[str]:
    """``[rustc, args...]`` compiling a one-line library ``tmp_path/lib.rs`` to metadata
    in ``tmp_path/out``, as cargo would call the wrapper."""
    rustc = shutil.which("rustc")
    assert rustc
    src = tmp_path / "lib.rs"
    src.write_text("pub fn f() {}\n")
    return [rustc, "--crate-type", "lib", "--crate-name", name, "--emit=dep-info,metadata",
            "--out-dir", str(tmp_path / "out"), str(src)]
