"""DVC stage `fgnet`: record the optional FG-NET folder (presence, file count, content digest).

Arguments and file writes only; the work is in `agebench.data.fgnet`. The stage is `always_changed` in
dvc.yaml (it reads a folder DVC cannot track, as the folder may be absent); its output is byte-identical
while the folder is unchanged, so `reference`, which depends on it, reruns only when the folder changes.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from agebench.data.fgnet import fgnet_manifest
from agebench.infra.common import run_main, write_json
from agebench.params.load import load_params


def main(argv: list[str] | None = None) -> int:
    """CLI entry point; returns the exit status."""
    parser = argparse.ArgumentParser(prog="python -m stages.fgnet", description=__doc__.splitlines()[0])
    parser.add_argument("--params", default="params.yaml", type=Path)
    parser.add_argument("--out", default="data/fgnet.json", type=Path)
    args = parser.parse_args(argv)
    configured = load_params(args.params).evaluate.fgnet_dir
    folder = (args.params.resolve().parent / configured) if configured else None
    record = fgnet_manifest(folder, configured)
    write_json(args.out, record)
    print(f"fgnet: {record['status']} ({record['files']} files) at {configured or '(evaluate.fgnet_dir is empty)'}")
    return 0


if __name__ == "__main__":
    run_main(main)
