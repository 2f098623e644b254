"""The report stage's library (PROTOCOL.md s.6): being split into modules; for now the previous module."""

from agebench.report._old import *  # noqa: F403
