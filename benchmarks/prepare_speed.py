"""Time the `prepare` stage on a real UTKFace folder (issue: all 23,708 files within 2 minutes on 2 cores).

    python benchmarks/prepare_speed.py [--data ../shared/data/utkface/UTKFace] [--compare-serial]

Writes into a temporary folder (deleted afterwards) with the default resolutions (64, 128, 256), and
prints files/s, the counts it found, and with --compare-serial the one-worker time and the ratio,
measured in the same run.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

from agebench.data.prepare import prepare
from agebench.params.sections import DataConfig, GroupsConfig

REPO = Path(__file__).resolve().parents[1]


def run(folder: Path, workers: int) -> tuple[float, dict]:
    out = Path(tempfile.mkdtemp(prefix="agebench-prepare-bench-"))
    try:
        t0 = time.perf_counter()
        report = prepare(folder, out / "prepared", DataConfig(), GroupsConfig(), workers=workers)
        return time.perf_counter() - t0, report
    finally:
        shutil.rmtree(out, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data" / "utkface" / "UTKFace")
    parser.add_argument("--compare-serial", action="store_true", help="also time one worker process")
    args = parser.parse_args()
    if not args.data.is_dir():
        raise SystemExit(f"UTKFace folder not found: {args.data} (pass --data)")
    print(f"machine: {os.cpu_count()} cores, load average at start {os.getloadavg()[0]:.2f}")
    secs, report = run(args.data, 0)
    n = report["files_total"]
    print(
        f"prepare, {os.cpu_count()} workers: {secs:.1f} s for {n} files ({n / secs:.0f} files/s); "
        f"kept {report['images_kept']}, test {report['split']['test']}, excluded {report['excluded']}"
    )
    if args.compare_serial:
        secs1, _ = run(args.data, 1)
        print(f"prepare, 1 worker: {secs1:.1f} s ({n / secs1:.0f} files/s); parallel speed-up {secs1 / secs:.2f}x")
    print(
        f"load average at end {os.getloadavg()[0]:.2f}; target: <= 120 s on 2 cores -> "
        f"{'met' if secs <= 120 else 'NOT met'}"
    )


if __name__ == "__main__":
    main()
