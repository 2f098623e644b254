"""agebench: a reproducible benchmark for face-aging methods."""

__version__ = "0.1.0"

#: Version of the evaluation protocol (PROTOCOL.md) this code implements; recorded in every result.
PROTOCOL_VERSION = 3
