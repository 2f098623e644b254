"""How long the full profile takes: each method's training workload from its params, times a throughput.

The workload comes from the real UTKFace file names (labels, the sha1 split and the group schemes of
PROTOCOL.md, no image decoded) and each method's own `num_steps` / `epoch_lengths` / batch sizes from
`params.yaml` (profile full). Throughputs (training images per second, as `benchmarks/train_speed.py`
and the train stage's progress bar count them) are given per method with `--ips METHOD=VALUE`,
measured on the GPU in question; methods without one are listed with the throughput they would need
to fit the `--budget-hours`.

Usage: .venv/bin/python benchmarks/full_profile_estimate.py --utkface ../shared/data/utkface/UTKFace \
           [--ips cyclegan_keras=900 --ips age_cgan=5000 ...] [--budget-hours 3]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from agebench.data.prepare import group_of, list_files, parse_label, split_of
from agebench.params.load import load_params
from methods.base import TrainData


def train_ages(utkface: Path) -> list[int]:
    """Ages of the train-split files with a valid label (no image decoded)."""
    labels = [(name, parse_label(name)) for name in list_files(utkface)]
    return [lab.age for name, lab in labels if not isinstance(lab, str) and split_of(name) == "train"]


def train_data_stub(ages: list[int], scheme: str, groups: dict) -> TrainData:
    """Group labels of the train split (no images: only the schedule is computed)."""
    names = tuple(groups[scheme])
    ids = [names.index(g) for g in (group_of(a, groups[scheme]) for a in ages) if g]
    return TrainData(images={}, groups={scheme: torch.tensor(ids)}, group_names={scheme: names})


def schedule_only(name: str, params):
    """The method built for its schedule only: a pretrained helper it insists on is stood in for by an
    untrained one of the same shape (never run here)."""
    from torchvision.models import vgg16

    from agebench.infra.registry import METHODS
    from agebench.params.reading import section

    cls = METHODS.get(name)
    aux = {"vgg16": vgg16().features} if "vgg16" in cls.aux_networks else {}
    config = section(params.raw, name, cls.config_cls)
    return cls(config, tuple(params.groups.schemes()[cls.scheme]), torch.device("cpu"), aux)


def images_per_step(method, step: int) -> int:
    """Training images one step consumes: a batch per domain for the CycleGANs (the progressive one is
    counted from its schedule in `main`), one batch for Age-cGAN."""
    from methods.cyclegan_base import CycleGANFamily

    c = method.config
    return 2 * c.batch_size if isinstance(method, CycleGANFamily) else c.batch_size


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--utkface", type=Path, required=True, help="folder of UTKFace images")
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--ips", action="append", default=[], help="METHOD=images/s measured on the GPU")
    ap.add_argument("--budget-hours", type=float, default=3.0)
    args = ap.parse_args()
    params = load_params(args.params)
    if params.profile != "full":
        raise SystemExit(f"{args.params} has profile {params.profile!r}; the estimate is for the full profile")
    ips = {k: float(v) for k, v in (item.split("=", 1) for item in args.ips)}
    schemes = params.groups.schemes()
    ages = train_ages(args.utkface)
    rows = []
    for name in params.methods:
        if name == "identity":
            continue
        method = schedule_only(name, params)
        data = train_data_stub(ages, method.scheme, schemes)
        steps = method.num_steps(data)
        if type(method).__name__ == "CycleGANKeras":  # the batch changes with the size schedule
            images = sum(2 * p.batch * max(0, min(p.end, steps) - p.start) for p in method.schedule(data))
        else:
            images = steps * images_per_step(method, 0)
        rows.append((name, steps, images, ips.get(name)))
    print("| method | steps | training images | images/s | hours |")
    print("|---|---:|---:|---:|---:|")
    for name, steps, images, rate in rows:
        hours = f"{images / rate / 3600:.2f}" if rate else "–"
        print(f"| {name} | {steps:,} | {images:,} | {rate or '–'} | {hours} |")
    all_images = sum(r[2] for r in rows)
    print(f"\ntotal training images: {all_images:,}; to fit {args.budget_hours} h the methods need "
          f"{all_images / (args.budget_hours * 3600):.0f} training images/s on average")  # fmt: skip
    missing = [r[0] for r in rows if r[3] is None]
    if missing:
        print(f"no measured throughput for: {', '.join(missing)} (pass --ips METHOD=VALUE)")
    else:
        print(f"estimated training time: {sum(r[2] / r[3] for r in rows) / 3600:.2f} h (scoring not included)")


if __name__ == "__main__":
    main()
