"""``kache monitor``: the live dashboard."""
