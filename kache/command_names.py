"""kache's commands and the module of kache.cli that holds each: read by the CLI (which
loads a command's module only when it runs) and by the entry point (which must tell
``kache init`` from a compiler named ``init`` without importing click)."""

from __future__ import annotations

__all__ = ["LAZY_COMMANDS"]

# tests/cli/test_config_commands.py checks this against each module's COMMANDS.
LAZY_COMMANDS = {
    "list": "cache", "stats": "cache", "why-miss": "cache", "gc": "cache", "purge": "cache",
    "monitor": "monitor",
    "config": "config",
    "daemon": "daemon",
    "dev": "dev",
    "sync": "remote", "remote": "remote",
    "demo": "demo", "clean": "clean", "init": "init", "doctor": "doctor", "completion": "completion",
}
