"""The help formatter of every `agebench` command (its own module: the pre-flight imports it without the CLI)."""

from __future__ import annotations

import argparse


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Every argument's default in its help; description and examples (epilog) printed as written."""

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        # Text written with line breaks (examples) is kept as written; one-paragraph text is wrapped.
        if "\n" in text:
            return super()._fill_text(text, width, indent)
        return argparse.HelpFormatter._fill_text(self, text, width, indent)

    def _get_help_string(self, action: argparse.Action) -> str | None:
        # No "(default: None)" / "(default: False)" on options that are simply absent unless given.
        if action.default is None or action.default is False:
            return action.help
        return super()._get_help_string(action)
