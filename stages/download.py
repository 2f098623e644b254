"""DVC stage `download`: make UTKFace available on disk (PROTOCOL.md section 1).

Arguments and file writes only; the work is in `agebench.data.download`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from agebench.data.download import materialise
from agebench.infra.errors import UserError
from agebench.infra.preflight import preflight
from agebench.params.load import load_params


def main(argv: list[str] | None = None) -> int:
    """CLI entry point; returns the exit status (2 for a data-source or params error)."""
    parser = argparse.ArgumentParser(prog="python -m stages.download", description=__doc__.splitlines()[0])
    parser.add_argument("--params", default="params.yaml", type=Path)
    parser.add_argument("--out", default="data/raw", type=Path)
    parser.add_argument("--cache", default="data/downloads", type=Path)
    args = parser.parse_args(argv)
    # Pre-flight first (seconds): everything the configured methods and metrics need, and no full
    # profile on a CPU-only machine unless allowed, before any download or hours of work.
    if preflight(args.params, "download", data_dir=args.out.parent) != 0:
        return 2
    try:
        data = load_params(args.params).data
        record = materialise(
            data.source,
            args.out,
            args.cache,
            data.sha256,
            data.retries,
            base_dir=args.params.parent,
            max_member_bytes=data.max_member_bytes,
            max_unpacked_bytes=data.max_unpacked_bytes,
        )
    except UserError as exc:  # bad params, unknown names, an unusable data source
        print(f"download: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("download: interrupted (Ctrl-C); the previous output, if any, is unchanged", file=sys.stderr)
        return 130
    print(f"download: {record['files']} files from {record['kind']} source at {record['images_dir']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
