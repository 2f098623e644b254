"""What every `agebench` command shares: its parser's making, the help formatter, shared options, argument types
and the summary line."""

from __future__ import annotations

import argparse
from collections.abc import Sequence


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


def command_parser(
    sub: argparse._SubParsersAction, name: str, help: str, examples: Sequence[str], description: str | None = None
) -> argparse.ArgumentParser:
    """Register command (or action) `name` on `sub`, the one place a command's parser is made: `help` is its line
    in the parent's `--help`; its own `--help` shows `description` (when given), every option with its default
    (`HelpFormatter`) and `examples`, whole command lines, the module's `EXAMPLE` first."""
    label = "example" if len(examples) == 1 else "examples"
    epilog = f"{label}:\n" + "\n".join(f"  {e}" for e in examples)
    return sub.add_parser(name, help=help, description=description, formatter_class=HelpFormatter, epilog=epilog)


def add_run_options(parser: argparse.ArgumentParser, params_help: str, cache: bool = True) -> None:
    """The options that point a command at a pipeline run, named and defaulted as the stages name them:
    `--params` (described by `params_help`), `--data` (the prepare stage's folder) and, with `cache`,
    `--cache` (the scoring cache)."""
    parser.add_argument("--params", default="params.yaml", help=params_help)
    parser.add_argument("--data", default="data/prepared", help="the prepare stage's folder")
    if cache:
        parser.add_argument(
            "--cache", default=None, help="content-keyed scoring cache (default: $AGEBENCH_CACHE or ~/.cache/agebench)"
        )


def add_gate_options(parser: argparse.ArgumentParser, baseline_help: str) -> None:
    """The regression gate's inputs, shared by `check` and `baseline update` (PROTOCOL.md s.6): `--baseline`
    (required; `baseline_help` says what is done with it), `--metrics`, `--params` and `--probes`."""
    parser.add_argument("--baseline", required=True, help=baseline_help)
    parser.add_argument("--metrics", default="reports/metrics", help="folder of <method>.json metrics files")
    parser.add_argument("--params", default="params.yaml", help="where `check:` (directions, tolerances) is read")
    parser.add_argument(
        "--probes", default=None, help="folder of the probes' metrics files (`agebench probes`; format-3 baselines)"
    )


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
