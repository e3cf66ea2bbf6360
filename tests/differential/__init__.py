"""Differential testing of kache against plain cargo.

Hypothesis generates small workspaces (workspace.py) and sequences of operations on
them (ops.py, strategies.py): edits, same-size edits, touches, reverts, new files,
environment changes, RUSTFLAGS, profiles, features, relocations to other paths, HOMEs
and CARGO_HOMEs, symlinked directories, build scripts that generate code and compile C,
proc macros, RUSTC scripts, `cargo clippy`, `cargo test`. Every step is built through
kache and with plain cargo in lockstep (harness.py), and the two are compared by
behaviour (observe.py) and, optionally, hits' artifacts byte for byte. A divergence is
minimised (minimize.py) and reported with its steps, files, both outputs and a shell
script that reproduces it.

    pytest -m e2e tests/differential                          # the bounded CI run
    KACHE_DIFF_KACHE=/other/kache pytest tests/differential   # against another kache
    python3 benchmarks/differential.py --examples 200 --steps 8   # the long run
"""
