"""The `agebench` command: score folders of faces, and the benchmark's helper commands.

Each command is a module of `agebench.commands` with `add_parser(sub)` (its parser, made by
`agebench.commands._help_format.command_parser`, and its arguments, importing nothing heavy, so `--help` is
instant), `run(args) -> int` (the exit status) and `EXAMPLE` (one command line), registered in COMMANDS.
A user-caused error (`agebench.infra.errors`) becomes one `agebench CMD: error: ...` line on stderr and exit
status 2, here and nowhere else.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from types import ModuleType

from agebench.commands._help_format import HelpFormatter

#: Every `agebench` command: its name -> the module that defines it, in the order `--help` lists them.
COMMANDS = {
    "fid": "agebench.commands.fid",
    "age": "agebench.commands.age",
    "verify": "agebench.commands.verify",
    "check": "agebench.commands.check",
    "new-method": "agebench.commands.new_method",
    "baseline": "agebench.commands.baseline",
    "probes": "agebench.commands.probes",
    "merge-seeds": "agebench.commands.merge_seeds",
    "export-inputs": "agebench.commands.export_inputs",
    "score-outputs": "agebench.commands.score_outputs",
    "age-photo": "agebench.commands.age_photo",
    "feature-maps": "agebench.commands.feature_maps",
    "doctor": "agebench.commands.doctor",
    "publish": "agebench.commands.publish",
    "leaderboard": "agebench.commands.leaderboard",
    "curves": "agebench.commands.curves",
    "repro": "agebench.commands.repro",
}


def command_module(name: str) -> ModuleType:
    """The module of command `name` (imported on first use)."""
    return importlib.import_module(COMMANDS[name])


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of `agebench` and its subcommands."""
    modules = {name: command_module(name) for name in COMMANDS}
    p = argparse.ArgumentParser(
        prog="agebench",
        description=__doc__.split("\n\n")[0],
        formatter_class=HelpFormatter,
        epilog="examples:\n"
        + "\n".join(f"  {m.EXAMPLE}" for m in modules.values())
        + "\n\n`agebench CMD --help` for more.",
    )
    sub = p.add_subparsers(dest="command", required=True)
    for module in modules.values():
        module.add_parser(sub)  # through `command_parser`: defaults and examples in every command's --help
    return p


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `agebench` console script; returns the exit status.

    0 on success; 2, after one `agebench CMD: error: ...` line on stderr, for a user-caused error (a
    missing or image-less folder, bad params, an unwritable output, missing weights; bad arguments exit 2
    through argparse); 130 with one line on Ctrl-C.
    """
    from agebench.infra.errors import report_user_error, user_errors

    argv = sys.argv[1:] if argv is None else argv
    try:
        args = build_parser().parse_args(argv)
        try:
            return command_module(args.command).run(args)
        except user_errors() as exc:
            return report_user_error(f"agebench {args.command}", exc)
    except KeyboardInterrupt:
        print("agebench: interrupted (Ctrl-C); outputs already in place are unchanged", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
