"""The terminal UIs (textual): the live monitor and the config editor.

Only this package imports textual."""
