"""What every `agebench` command shares: the help formatter, argument types and the summary line."""

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


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def summary(out_file: str | None, line: str) -> None:
    """A command's one-line summary, also when its table or JSON went to a file. On stderr: stdout carries
    only the data (so `agebench age DIR > ages.csv` stays a clean CSV)."""
    import sys

    print(f"{line}; wrote {out_file}" if out_file else line, file=sys.stderr)
