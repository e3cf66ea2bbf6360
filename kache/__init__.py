"""kache: a content-addressed build cache for rustc, used as cargo's RUSTC_WRAPPER."""

__version__ = "0.1.0"
