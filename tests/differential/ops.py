"""Operations on a workspace's state (mutations) and the cargo commands observed after
each one. Pure data: :class:`tests.differential.harness.Harness` applies them, and
:mod:`tests.differential.strategies` generates them."""

from __future__ import annotations

from dataclasses import dataclass


class Op:
    kind = "op"

    @property
    def op_class(self) -> str:
        """What kind of hazard the operation is, for divergence signatures: ``change`` (an
        input changed: did kache notice?), ``place`` (another checkout, HOME, target dir,
        or a clean: was an entry recorded elsewhere right here?), ``config`` (environment,
        flags, toolchain, settings), ``start`` (the first build)."""
        return OP_CLASSES.get(self.kind, "change")

    def describe(self) -> str:
        raise NotImplementedError


@dataclass(frozen=True)
class Nothing(Op):
    kind = "nothing"

    def describe(self) -> str:
        return "nothing changes"


@dataclass(frozen=True)
class Touch(Op):
    path: str  # relative to the checkout
    kind = "touch"

    def describe(self) -> str:
        return f"touch {self.path} (mtime only)"


@dataclass(frozen=True)
class SetV(Op):
    lib: int
    v: int
    same_size: bool
    kind = "edit"

    def describe(self) -> str:
        what = "same-size edit" if self.same_size else "edit"
        return f"{what}: kd_lib{self.lib}/src/lib.rs V = {self.v}"


@dataclass(frozen=True)
class Revert(Op):
    back: int  # how many distinct contents back
    kind = "revert"

    def describe(self) -> str:
        return f"revert every file to its content of {self.back} edit(s) ago"


@dataclass(frozen=True)
class AddModule(Op):
    lib: int
    value: int
    kind = "add_file"

    def describe(self) -> str:
        return f"add a module file to kd_lib{self.lib} (pub const A = {self.value}) and declare it"


@dataclass(frozen=True)
class EditText(Op):
    lib: int
    which: str  # "text" (data/text.txt), "shared" (shared<i>/data.txt), "decoy" (src/data.txt)
    text: str
    kind = "edit_text"

    def describe(self) -> str:
        path = {"text": f"kd_lib{self.lib}/data/text.txt", "shared": f"shared{self.lib}/data.txt",
                "decoy": f"kd_lib{self.lib}/src/data.txt"}[self.which]
        return f"edit {path} to {self.text!r}"


@dataclass(frozen=True)
class Repoint(Op):
    lib: int
    to: str
    kind = "repoint"

    def describe(self) -> str:
        return f"re-point symlink kd_lib{self.lib}/src/linked -> ../../shared{self.lib}/{self.to}"


@dataclass(frozen=True)
class EditGen(Op):
    lib: int
    gen: str
    kind = "edit_gen"

    def describe(self) -> str:
        return f"edit kd_lib{self.lib}/gen.txt (read by the build script) to {self.gen!r}"


@dataclass(frozen=True)
class EditC(Op):
    lib: int
    value: int
    kind = "edit_c"

    def describe(self) -> str:
        return f"edit kd_lib{self.lib}/csrc/kd.c to return {self.value}"


@dataclass(frozen=True)
class EditMacro(Op):
    k: int
    kind = "edit_macro"

    def describe(self) -> str:
        return f"edit kd_macros/src/lib.rs (proc macro) K = {self.k}"


@dataclass(frozen=True)
class SetLint(Op):
    lib: int
    mode: str
    kind = "lint"

    def describe(self) -> str:
        return f"kd_lib{self.lib}: lint code {self.mode}"


@dataclass(frozen=True)
class SetEnv(Op):
    name: str
    value: str | None  # a template: {ws}, {home} and {cargo_home} are expanded at each build
    kind = "env"

    def describe(self) -> str:
        return f"unset {self.name}" if self.value is None else f"export {self.name}={self.value!r}"


@dataclass(frozen=True)
class SetRustflags(Op):
    value: str | None
    kind = "rustflags"

    def describe(self) -> str:
        return "unset RUSTFLAGS" if self.value is None else f"export RUSTFLAGS={self.value!r}"


@dataclass(frozen=True)
class SetProfile(Op):
    profile: str
    kind = "profile"

    def describe(self) -> str:
        return f"profile {self.profile}"


@dataclass(frozen=True)
class ToggleFeature(Op):
    lib: int
    kind = "feature"

    def describe(self) -> str:
        return f"toggle --features kd_lib{self.lib}/extra"


@dataclass(frozen=True)
class SetRustc(Op):
    mode: str | None  # None (cargo's rustc), "path" (RUSTC=<checkout>/tools/bin/kdrustc), "bare" (RUSTC=kdrustc)
    kind = "rustc"

    def describe(self) -> str:
        return {None: "unset RUSTC", "path": "export RUSTC=<checkout>/tools/bin/kdrustc (a script: exec rustc …)",
                "bare": "export RUSTC=kdrustc (the same script, found on PATH)"}[self.mode]


@dataclass(frozen=True)
class EditRustcScript(Op):
    flags: str
    kind = "rustc_script"

    def describe(self) -> str:
        return f"edit tools/bin/kdrustc in place: exec rustc {self.flags + ' ' if self.flags else ''}\"$@\""


@dataclass(frozen=True)
class SetWorkspaceWrapper(Op):
    mode: str | None  # None, "path" (<checkout>/tools/bin/kdwrap), "bare" (kdwrap on PATH): exec "$@"
    kind = "workspace_wrapper"

    def describe(self) -> str:
        return {None: "unset RUSTC_WORKSPACE_WRAPPER",
                "path": "export RUSTC_WORKSPACE_WRAPPER=<checkout>/tools/bin/kdwrap (exec \"$@\")",
                "bare": "export RUSTC_WORKSPACE_WRAPPER=kdwrap (on PATH; exec \"$@\")"}[self.mode]


@dataclass(frozen=True)
class KacheSetting(Op):
    name: str
    value: str | None
    kind = "kache_setting"

    def describe(self) -> str:
        return f"kache side only: {'unset ' + self.name if self.value is None else f'export {self.name}={self.value}'}"


@dataclass(frozen=True)
class SetTargetDir(Op):
    mode: str | None  # None (target/), "relative" (CARGO_TARGET_DIR=../ktarget), "absolute" (<checkout>/ktarget-abs)
    kind = "target_dir"

    def describe(self) -> str:
        return {None: "kache side: default target dir (ws/target)",
                "relative": "kache side: CARGO_TARGET_DIR=../ktarget (relative, outside the workspace)",
                "absolute": "kache side: CARGO_TARGET_DIR=<checkout>/ktarget-abs"}[self.mode]


@dataclass(frozen=True)
class EditExt(Op):
    v: int
    kind = "edit_ext"

    def describe(self) -> str:
        return f"edit ext/kd_ext/src/lib.rs (outside the workspace) V = {self.v}"


@dataclass(frozen=True)
class Clean(Op):
    kind = "clean"

    def describe(self) -> str:
        return "cargo clean (both sides' target dirs removed)"


@dataclass(frozen=True)
class Relocate(Op):
    slot: int
    home: int
    cargo_home: int
    mode: str  # "clone", "move", "copy", "switch"
    kind = "relocate"

    def describe(self) -> str:
        how = {"clone": "fresh clone (sources only, new mtimes) at", "move": "mv the checkout (with target/) to",
               "copy": "cp -a the checkout (with target/) to",
               "switch": "switch to the checkout (its own target/ kept; sources synced) at"}[self.mode]
        return f"{how} checkout #{self.slot}; HOME #{self.home}, CARGO_HOME #{self.cargo_home}"


# The commands observed after each mutation.

@dataclass(frozen=True)
class Command:
    verb: str  # "build", "check", "clippy", "test"
    package: str | None = None  # clippy -p
    no_deps: bool = False  # clippy --no-deps: lint only the selected (primary) packages
    deny_warnings: bool = False  # clippy -- -D warnings

    def describe(self) -> str:
        if self.verb == "build":
            return "cargo build + run kd_app"
        if self.verb == "clippy":
            return ("cargo clippy" + (f" -p {self.package}" if self.package else " (workspace)")
                    + (" --no-deps" if self.no_deps else "") + (" -- -D warnings" if self.deny_warnings else ""))
        return f"cargo {self.verb}"


@dataclass(frozen=True)
class Step:
    op: Op
    command: Command

    def describe(self) -> str:
        return f"{self.op.describe()}; then {self.command.describe()}"


OP_CLASSES = {"nothing": "start", "relocate": "place", "clean": "place", "target_dir": "place",
              "env": "config", "rustflags": "config", "profile": "config", "feature": "config", "rustc": "config",
              "rustc_script": "config", "workspace_wrapper": "config", "kache_setting": "config"}
