"""DVC stage `prepare`: parse UTKFace labels, split, group, resize and store memory-mappable arrays.

Arguments and file writes only; the work is in `agebench.data.prepare`.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from agebench.data.prepare import age_histogram, prepare
from agebench.infra.common import atomic_path, read_json, run_main, write_json
from agebench.params.load import load_params


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--source", default="data/raw", help="output of the download stage (source.json)")
    parser.add_argument("--out", default="data/prepared")
    parser.add_argument("--report", default="reports/data.json")
    parser.add_argument("--figure", default="reports/figures/age_histogram.png")
    args = parser.parse_args(argv)

    params = load_params(args.params)
    source = read_json(Path(args.source) / "source.json")
    out = Path(args.out)
    with atomic_path(out, kind="dir") as tmp:
        report = prepare(Path(source["images_dir"]), tmp, params.data, params.groups, params.data.workers)
        report = {"profile": params.profile, "source_digest": source.get("digest"), **report}
        write_json(tmp / "data.json", report)
    write_json(args.report, report)
    age_histogram(out / "index.csv", Path(args.figure))
    excl = ", ".join(f"{k}: {v}" for k, v in report["excluded"].items() if v)
    skipped = ", ".join(f"{k}: {v}" for k, v in report["skipped"].items() if v)
    print(
        f"prepare: {report['files_total']} files, {report['images_kept']} kept "
        f"(train {report['split']['train']}, test {report['split']['test']}; {report['duplicate_groups']} groups of "
        f"identical files, {report['moved_files']} moved to their group's side); excluded: {excl or 'none'}"
        + (f"; not regular files, skipped: {skipped}" if skipped else "")
    )
    return 0


if __name__ == "__main__":
    run_main(main)
