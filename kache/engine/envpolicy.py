"""Which environment variables go into the cheap key: one table, the policy.

rustc itself reports, in the dep-info, every variable the code reads with ``env!`` or
``option_env!``; those are keyed with their values in the full key whatever this table
says. This table decides the rest: variables a compile may depend on without rustc
reporting them (rustc's and clippy-driver's own switches, variables cargo sets for the
crate that a proc macro may read), and variables that only steer cargo, whose effect
reaches rustc as arguments (keyed as such) and which must not split the cache
(``CARGO_INCREMENTAL=0`` in CI, ``CARGO_TERM_COLOR``…).

Rows are matched by exact name first, then by the longest matching ``PREFIX_*``; a
``CARGO_*`` variable no row names is keyed (a proc macro may read it); any other
variable is not (a proc macro that reads one is declared in ``cache.extra_inputs``).
Values are keyed with this machine's paths replaced by placeholders (kache.paths), so a
path-valued variable such as ``CARGO_MANIFEST_DIR`` keys where the crate sits relative
to the workspace, not where the workspace sits.

The README's table of these rows is generated from here (``kache dev gen``).
"""

from __future__ import annotations

TYPE_CHECKING = False  # typing costs ~11 ms to import; annotations are strings here

if TYPE_CHECKING:
    from collections.abc import Mapping

__all__ = ["ENV_POLICY", "KEYED", "KEYED_UNDER_CLIPPY", "NOT_KEYED", "key_env", "policy"]

KEYED = "keyed"
KEYED_UNDER_CLIPPY = "keyed under clippy"
NOT_KEYED = "not keyed"

#: (variable or ``PREFIX_*``, policy, why), in the order the README shows them.
ENV_POLICY: tuple[tuple[str, str, str], ...] = (
    # rustc and clippy-driver read these themselves
    ("RUSTC_BOOTSTRAP", KEYED, "lets a stable rustc accept unstable options and features"),
    ("RUSTC_FORCE_RUSTC_VERSION", KEYED, "changes the version rustc writes into crate metadata"),
    ("SOURCE_DATE_EPOCH", KEYED, "the build date of reproducible builds; build-time code stamps it"),
    ("MACOSX_DEPLOYMENT_TARGET", KEYED, "rustc's minimum OS version on Apple targets"),
    ("IPHONEOS_DEPLOYMENT_TARGET", KEYED, "rustc's minimum OS version on Apple targets"),
    ("TVOS_DEPLOYMENT_TARGET", KEYED, "rustc's minimum OS version on Apple targets"),
    ("WATCHOS_DEPLOYMENT_TARGET", KEYED, "rustc's minimum OS version on Apple targets"),
    ("XROS_DEPLOYMENT_TARGET", KEYED, "rustc's minimum OS version on Apple targets"),
    ("CLIPPY_ARGS", KEYED, "clippy-driver's lint options (`cargo clippy -- -D warnings`)"),
    ("CLIPPY_CONF_DIR", KEYED, "where clippy-driver looks for clippy.toml"),
    ("CLIPPY_DISABLE_DOCS_LINKS", KEYED, "whether clippy-driver's messages link to the lint's documentation"),
    ("CARGO_PRIMARY_PACKAGE", KEYED_UNDER_CLIPPY,
     "clippy-driver lints only the packages named on the command line (`--no-deps`); rustc ignores it"),
    # cargo sets these for the crate it compiles
    ("CARGO_PKG_*", KEYED, "the package's name, version, authors…: `env!` and proc macros read them"),
    ("CARGO_CRATE_NAME", KEYED, "the crate's name"),
    ("CARGO_BIN_NAME", KEYED, "the binary's name"),
    ("CARGO_MANIFEST_DIR", KEYED, "the package's directory (a path: keyed relative to the workspace)"),
    ("CARGO_MANIFEST_PATH", KEYED, "the package's Cargo.toml (a path)"),
    ("CARGO_MANIFEST_LINKS", KEYED, "the package's `links` value"),
    ("OUT_DIR", KEYED, "the build script's output directory (a path)"),
    ("CARGO_TARGET_TMPDIR", KEYED, "a scratch directory for integration tests (a path)"),
    ("CARGO_BIN_EXE_*", KEYED, "the binaries an integration test may run (paths)"),
    ("CARGO_RUSTC_CURRENT_DIR", KEYED, "the directory rustc runs in (a path)"),
    ("CARGO", NOT_KEYED, "the path of cargo itself"),
    ("CARGO_MAKEFLAGS", NOT_KEYED, "the jobserver's file descriptors, new on every build"),
    ("CARGO_SBOM_PATH", NOT_KEYED, "where cargo writes an SBOM for this build"),
    ("CARGO_CFG_*", NOT_KEYED, "set for build scripts, whose output reaches rustc as arguments"),
    ("CARGO_FEATURE_*", NOT_KEYED, "set for build scripts; features reach rustc as `--cfg` arguments"),
    ("CARGO_ENCODED_RUSTFLAGS", NOT_KEYED, "flags cargo passes to rustc, which are keyed as arguments"),
    ("CARGO_ENCODED_RUSTDOCFLAGS", NOT_KEYED, "flags for rustdoc, which kache does not run"),
    # cargo's own configuration, given as variables: it steers cargo, whose decisions
    # reach rustc as arguments
    ("CARGO_HOME", NOT_KEYED, "where cargo keeps its registry and config"),
    ("CARGO_TARGET_DIR", NOT_KEYED, "where cargo writes its outputs"),
    ("CARGO_INCREMENTAL", NOT_KEYED, "cargo's incremental switch (the `-C incremental` it gives is not keyed either)"),
    ("CARGO_CACHE_RUSTC_INFO", NOT_KEYED, "whether cargo caches `rustc -vV`"),
    ("CARGO_BUILD_*", NOT_KEYED, "cargo configuration (`[build]`)"),
    ("CARGO_PROFILE_*", NOT_KEYED, "cargo configuration (`[profile]`): its effect is rustc's arguments"),
    ("CARGO_TARGET_*", NOT_KEYED, "cargo configuration (`[target]`: linker, runner, rustflags)"),
    ("CARGO_TERM_*", NOT_KEYED, "cargo's terminal output"),
    ("CARGO_LOG", NOT_KEYED, "cargo's own log"),
    ("CARGO_LOG_*", NOT_KEYED, "cargo's own log"),
    ("CARGO_NET_*", NOT_KEYED, "cargo configuration (network)"),
    ("CARGO_HTTP_*", NOT_KEYED, "cargo configuration (network)"),
    ("CARGO_REGISTRIES_*", NOT_KEYED, "cargo configuration (registries)"),
    ("CARGO_REGISTRY_*", NOT_KEYED, "cargo configuration (registries)"),
    ("CARGO_SOURCE_*", NOT_KEYED, "cargo configuration (source replacement)"),
    ("CARGO_ALIAS_*", NOT_KEYED, "cargo configuration (aliases)"),
    ("CARGO_UNSTABLE_*", NOT_KEYED, "cargo configuration (`-Z` flags of cargo)"),
    ("CARGO_CARGO_NEW_*", NOT_KEYED, "cargo configuration (`cargo new`)"),
    ("CARGO_DOC_*", NOT_KEYED, "cargo configuration (`cargo doc`)"),
    ("CARGO_INSTALL_*", NOT_KEYED, "cargo configuration (`cargo install`)"),
    ("CARGO_FUTURE_INCOMPAT_REPORT_*", NOT_KEYED, "cargo configuration (reports)"),
    ("CARGO_RESOLVER_*", NOT_KEYED, "cargo configuration (dependency resolution)"),
    ("CARGO_CACHE_*", NOT_KEYED, "cargo configuration (its download cache)"),
    ("CARGO_*", KEYED, "any other CARGO_ variable: cargo passes it on, and a proc macro may read it"),
    ("RUSTFLAGS", NOT_KEYED, "read by cargo; the flags are keyed as rustc's arguments"),
    ("RUSTC_WRAPPER", NOT_KEYED, "read by cargo; the programs it runs are keyed by content"),
    ("RUSTC_WORKSPACE_WRAPPER", NOT_KEYED, "read by cargo; the programs it runs are keyed by content"),
    ("RUSTC", NOT_KEYED, "read by cargo; the compiler it names is keyed by content and `-vV`"),
    ("*", NOT_KEYED, "any other variable; read by a proc macro, declare it in `cache.extra_inputs`"),
)

_EXACT: dict[str, str] = {}
_PREFIXES: list[tuple[str, str]] = []
for _name, _policy, _why in ENV_POLICY:
    if _name.endswith("*"):
        _PREFIXES.append((_name[:-1], _policy))
    else:
        _EXACT[_name] = _policy
_PREFIXES.sort(key=lambda p: len(p[0]), reverse=True)


def policy(name: str) -> str:
    """The table's word on one variable."""
    found = _EXACT.get(name)
    if found is not None:
        return found
    for prefix, pol in _PREFIXES:
        if name.startswith(prefix):
            return pol
    return NOT_KEYED  # pragma: no cover - the table ends with "*"


def key_env(env: Mapping[str, str], clippy: bool = False) -> list[tuple[str, str]]:
    """The variables of ``env`` that go into the cheap key, sorted by name; ``clippy``:
    the compiler chain runs clippy-driver."""
    out = []
    for name, value in env.items():
        pol = policy(name)
        if pol == KEYED or (clippy and pol == KEYED_UNDER_CLIPPY):
            out.append((name, value))
    return sorted(out)
