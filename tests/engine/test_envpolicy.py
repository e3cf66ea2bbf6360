"""The environment policy: one table decides which variables the cheap key holds."""

from __future__ import annotations

import pytest

from kache.engine.envpolicy import ENV_POLICY, KEYED, KEYED_UNDER_CLIPPY, NOT_KEYED, key_env, policy


@pytest.mark.parametrize(("name", "expected"), [
    ("CARGO_PKG_VERSION", KEYED),
    ("CARGO_MANIFEST_DIR", KEYED),
    ("OUT_DIR", KEYED),
    ("CARGO_BIN_EXE_app", KEYED),
    ("RUSTC_BOOTSTRAP", KEYED),
    ("CLIPPY_ARGS", KEYED),
    ("CLIPPY_DISABLE_DOCS_LINKS", KEYED),
    ("CARGO_PRIMARY_PACKAGE", KEYED_UNDER_CLIPPY),
    ("CARGO_INCREMENTAL", NOT_KEYED),
    ("CARGO_CACHE_RUSTC_INFO", NOT_KEYED),
    ("CARGO_TERM_COLOR", NOT_KEYED),
    ("CARGO_MAKEFLAGS", NOT_KEYED),
    ("CARGO_TARGET_DIR", NOT_KEYED),
    ("CARGO_TARGET_TMPDIR", KEYED),  # set by cargo for integration tests, not config
    ("CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_LINKER", NOT_KEYED),
    ("CARGO_PROFILE_RELEASE_LTO", NOT_KEYED),
    ("CARGO_SOMETHING_NEW", KEYED),  # unknown CARGO_ variables: a proc macro may read them
    ("HOME", NOT_KEYED),
    ("RUST_LOG", NOT_KEYED),
])
def test_policy_of_a_variable(name: str, expected: str) -> None:
    assert policy(name) == expected


def test_primary_package_is_keyed_only_under_clippy() -> None:
    env = {"CARGO_PRIMARY_PACKAGE": "1", "CARGO_PKG_NAME": "a", "CARGO_INCREMENTAL": "0", "PATH": "/bin"}
    assert key_env(env) == [("CARGO_PKG_NAME", "a")]
    assert key_env(env, clippy=True) == [("CARGO_PKG_NAME", "a"), ("CARGO_PRIMARY_PACKAGE", "1")]


def test_every_row_has_a_reason_and_a_known_policy() -> None:
    names = [name for name, _, _ in ENV_POLICY]
    assert len(names) == len(set(names))
    for name, pol, why in ENV_POLICY:
        assert pol in (KEYED, KEYED_UNDER_CLIPPY, NOT_KEYED) and why.strip(), name
    assert ENV_POLICY[-1][0] == "*"
