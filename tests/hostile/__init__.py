"""Hostile input (issue 9): generated and crafted input that tries to break kache
(helpers: tests/support/hostile.py)."""
