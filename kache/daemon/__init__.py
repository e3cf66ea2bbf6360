"""The kache daemon: hits served from a warm process, uploads, remote fetches and prefetches.

``wire`` (the public, versioned socket protocol: constants, framing, checks; stdlib
only), ``client`` (stdlib only, used by the wrapper and the CLI), ``server`` (the
daemon's wiring: socket, accept loop, op table) over its parts ``state``, ``hits``,
``fetch``, ``uploads``, ``remotes``, ``lifecycle``, ``logs`` and ``options``;
``control`` (start/stop/status from the outside), ``service`` (systemd user unit,
launchd agent).
"""
