"""The kache daemon: uploads, remote fetches and prefetches in the background.

``wire`` (the public, versioned socket protocol), ``client`` (stdlib only, used by
the wrapper), ``server`` (the daemon itself), ``control`` (start/stop/status from the
outside), ``service`` (systemd user unit, launchd agent).
"""
