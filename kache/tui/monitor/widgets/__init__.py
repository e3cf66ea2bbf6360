"""Widgets of the monitor, each with its own DEFAULT_CSS."""
