"""Pre-flight (`agebench doctor`, and the first thing the `download` stage does): in seconds, before any
long work, check everything the configured methods and metrics will need and print each problem with
its fix.

Checked: params.yaml itself, first and before any data is read (every section under every profile, each
method's section with its own typed config: `agebench.params.load.params_problems`, one line per bad key); the data
source (a local folder or archive exists, a URL answers or was already downloaded); every pretrained
scoring file (`metrics.backbones`, sha256-verified); the VGG-16 weights when `cyclegan_perceptual` is
listed (a configured file loaded as training loads it and checked by tensor names and shapes, the torch
hub file by the sha256 prefix in its name, or its download URL answers); the FaceNet weights when that
identity backend is chosen; free disk for the prepared arrays; the devices named in `train.device` /
`evaluate.device`; and the full profile on a machine without a GPU, which stops with the estimated hours
for this machine and the reduced-profile commands unless `train.allow_cpu_full: true`.

Exit status: 0 when nothing is wrong, 2 (after the list of problems) otherwise.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

#: UTKFace's file count (the archive of data.source's default URL), for estimates before it is downloaded.
UTKFACE_FILES = 23_708
#: Bytes of the default archive and of its unpacked images (measured: 106 MB archive, 200x200 JPEGs).
UTKFACE_ARCHIVE_BYTES = 106_000_000
UTKFACE_UNPACKED_BYTES = 120_000_000
#: Seconds a reachability probe waits for an answer.
PROBE_TIMEOUT_S = 5.0

#: Seconds per training step of each method at the full profile's settings on the reference CPU, measured
#: with `agebench doctor --measure-cpu` (one timed step after a warm-up, random uint8 faces, torch's
#: default 2 threads) on the 2-core development machine while it was shared with other jobs (load average
#: about 8): an upper bound for an idle machine of that kind.
CPU_SECONDS_PER_STEP: dict[str, float] = {
    "cyclegan_keras": 130.2,  # the issue-11 report's progress bar implied ~108 s/step on the same machine
    "cyclegan_perceptual": 28.6,
    "age_cgan": 7.27,
    "cyclegan_agevec": 5.51,
}
#: Cores of the machine CPU_SECONDS_PER_STEP was measured on; estimates scale linearly by core count
#: (an assumption: more cores rarely scale this well, so the estimate is a lower bound).
REFERENCE_CORES = 2
#: Training steps of each method in the full profile on the whole of UTKFace, used when the data is not
#: on this machine yet: `full_profile_steps(load_params("params.yaml"), UTKFace folder)` with the default
#: params (names only: the sha1 split without the v2 duplicate moves, 70 of 23,708 files).
FULL_PROFILE_STEPS: dict[str, int] = {
    "cyclegan_keras": 20_830,
    "cyclegan_perceptual": 1_328_400,
    "age_cgan": 73_300,
    "cyclegan_agevec": 332_100,
}


@dataclasses.dataclass(frozen=True)
class Problem:
    """One thing that would stop the pipeline: what is wrong and how to fix it."""

    what: str
    fix: str

    def __str__(self) -> str:
        return f"- {self.what}\n  fix: {self.fix}"


@dataclasses.dataclass
class Report:
    """What the pre-flight found: `problems` stop the run; `notes` are informational lines."""

    problems: list[Problem] = dataclasses.field(default_factory=list)
    notes: list[str] = dataclasses.field(default_factory=list)

    def text(self) -> str:
        """The human-readable report (notes first, then numbered problems)."""
        lines = [f"  {n}" for n in self.notes]
        if self.problems:
            lines.append(f"{len(self.problems)} problem(s) to fix before the pipeline can run:")
            lines += [str(p) for p in self.problems]
        else:
            lines.append("ok: nothing found that would stop the pipeline")
        return "\n".join(lines)


def _reachable(url: str) -> str | None:
    """None when `url` answers a HEAD (or ranged GET) request with a non-error status, else the reason."""
    import requests

    try:
        r = requests.head(url, allow_redirects=True, timeout=PROBE_TIMEOUT_S)
        if r.status_code in (403, 405):  # some hosts refuse HEAD: ask for the first byte
            r = requests.get(url, headers={"Range": "bytes=0-0"}, stream=True, timeout=PROBE_TIMEOUT_S)
            r.close()
    except requests.RequestException as exc:
        # The innermost cause (e.g. "Failed to resolve 'huggingface.co'"), not urllib3's retry wrapper.
        inner = getattr(exc.args[0], "reason", None) if exc.args else None
        text = str(inner or exc)
        text = text.split("): ", 1)[1] if "): " in text else text
        return f"{type(exc).__name__}: {text[:160]}"
    return None if r.status_code < 400 else f"HTTP {r.status_code}"


def check_data(data: Any, base: Path, data_dir: Path, probe: Callable[[str], str | None]) -> tuple[list, int]:
    """Problems with `data.source` (`data`: the `data:` section, a `DataConfig`), and the number of image files
    it holds (or UTKFace's when unknown)."""
    from agebench.data.download import is_url, resolve_source, url_filename

    source = data.source
    located = resolve_source(source, base)
    if isinstance(located, Path):
        if not located.exists():
            return [
                Problem(
                    f"data.source: {located} does not exist",
                    "set data.source in params.yaml to a folder of UTKFace images, a UTKFace.tar.gz archive or "
                    "its URL (relative paths are relative to params.yaml)",
                )
            ], UTKFACE_FILES
        if located.is_dir():
            n = sum(1 for e in os.scandir(located) if e.is_file(follow_symlinks=False))
            if n == 0:
                return [Problem(f"data.source: folder {located} holds no files", "point it at the images")], 0
            return [], n
        return [], UTKFACE_FILES
    if not is_url(source):  # pragma: no cover - resolve_source returns a Path for anything else
        return [Problem(f"data.source: {source!r} is neither a URL nor a path", "fix data.source")], UTKFACE_FILES
    cached = data_dir / "downloads" / url_filename(source)
    if (data_dir / "raw" / "source.json").is_file() or cached.is_file():
        return [], UTKFACE_FILES
    reason = probe(source)
    if reason is None:
        return [], UTKFACE_FILES
    return [
        Problem(
            f"data.source: {source} cannot be reached from this machine ({reason})",
            "download UTKFace.tar.gz on a machine with internet and set data.source to the local archive "
            "(or to a folder of UTKFace images)",
        )
    ], UTKFACE_FILES


def check_backbones() -> list[Problem]:
    """Every pretrained scoring file (installed with the project's packages) present with its sha256."""
    from metrics.backbones import BACKBONES, BackboneError, resolve

    problems = []
    for key in BACKBONES:
        try:
            resolve(key)
        except BackboneError as exc:
            what, _, fix = str(exc).partition("; fix: ")
            problems.append(Problem(what, fix or "reinstall the project: pip install -e .[dev]"))
    return problems


def check_method_files(params: Any, base: Path, probe: Callable[[str], str | None]) -> list[Problem]:
    """Pretrained files of the listed methods (aux networks) and of the configured identity backend."""
    from agebench.infra.pretrained import (
        VGG16_MIB,
        VGG16_URL,
        MissingWeightsError,
        WeightsFileError,
        check_hub_file,
        hub_file,
        load_vgg16_file,
    )
    from agebench.infra.registry import METHODS
    from agebench.params.reading import ParamsError, section

    problems = []
    for name in params.methods:
        cls = METHODS.get(name)
        if "vgg16" not in cls.aux_networks:
            continue
        try:
            weights = getattr(section(params.raw, name, cls.config_cls), "weights_path", "")
        except ParamsError:  # listed by the params check
            continue
        if weights:
            path = Path(weights).expanduser()
            path = path if path.is_absolute() else Path.cwd() / path
            if not path.is_file():
                problems.append(
                    Problem(
                        f"{name}.weights_path: {path} does not exist",
                        f"point it at a state dict of torchvision vgg16().features, or set it to '' to use "
                        f"torchvision's own file (downloaded from {VGG16_URL}, {VGG16_MIB} MiB)",
                    )
                )
                continue
            try:  # what training will load, loaded the same safe way now: names, shapes, known sha256
                load_vgg16_file(path, f"{name}.weights_path")
            except WeightsFileError as exc:
                what, _, fix = str(exc).partition("; ")
                problems.append(Problem(what, fix))
        elif hub_file().is_file():
            try:
                check_hub_file(hub_file())
            except MissingWeightsError as exc:
                what, _, fix = str(exc).partition(": delete")
                problems.append(Problem(what, f"delete{fix}, or set {name}.weights_path"))
        else:
            reason = probe(VGG16_URL)
            if reason is not None:
                problems.append(
                    Problem(
                        f"{name} needs VGG-16 ImageNet weights: {hub_file()} is missing and {VGG16_URL} cannot be "
                        f"reached ({reason})",
                        f"set {name}.weights_path in params.yaml to a state dict of vgg16().features "
                        f"(torch.save(vgg16(weights='IMAGENET1K_V1').features.state_dict(), path) writes one), "
                        f"or copy vgg16-397923af.pth to {hub_file()}, or drop {name} from `methods:`",
                    )
                )
    ev = params.evaluate
    if getattr(ev, "id_backend", "") == "facenet":
        weights = getattr(ev, "facenet_weights", "")
        path = (base / Path(weights).expanduser()) if weights else None
        if path is None or not path.is_file():
            problems.append(
                Problem(
                    f"evaluate.id_backend is facenet but evaluate.facenet_weights ({weights!r}) is not a file",
                    "set evaluate.facenet_weights to facenet-pytorch's InceptionResnetV1 state dict, or use the "
                    "default identity backend",
                )
            )
        import importlib.util

        if importlib.util.find_spec("facenet_pytorch") is None:
            problems.append(
                Problem(
                    "evaluate.id_backend is facenet but facenet-pytorch is not installed",
                    "pip install --no-deps facenet-pytorch==2.6.0",
                )
            )
    return problems


def prepared_bytes(n_files: int, data: Any) -> int:
    """Bytes of the prepared arrays (`data`: the `data:` section): kept files x sum over resolutions of R*R*3
    (uint8 RGB)."""
    n = round(n_files * data.subsample)
    return n * sum(3 * r * r for r in data.resolutions)


def check_disk(data: Any, data_dir: Path, n_files: int, free: Callable[[Path], int] | None = None) -> list[Problem]:
    """Free space where `data/` lives for the archive, the unpacked images and the prepared arrays (`data`: the
    `data:` section)."""
    from agebench.data.download import is_url

    need = prepared_bytes(n_files, data)
    if is_url(data.source):
        need += UTKFACE_ARCHIVE_BYTES + UTKFACE_UNPACKED_BYTES
    elif not Path(data.source).is_dir():
        need += UTKFACE_UNPACKED_BYTES
    need = int(need * 1.1)  # the atomic writes hold a temporary copy of one resolution at a time
    where = data_dir
    while not where.exists() and where != where.parent:
        where = where.parent
    have = (free or (lambda p: shutil.disk_usage(p).free))(where)
    if have >= need:
        return []
    return [
        Problem(
            f"disk: {have / 1e9:.1f} GB free at {where}, the data needs about {need / 1e9:.1f} GB "
            f"({round(n_files * data.subsample):,} faces at {', '.join(map(str, data.resolutions))} px)",
            "free some space, or lower data.resolutions / data.subsample (the smoke profile keeps 8% of the faces)",
        )
    ]


def _device_ok(name: str) -> str | None:
    import torch

    if name == "auto" or name == "cpu":
        return None
    try:
        device = torch.device(name)
    except RuntimeError as exc:
        return str(exc)
    if device.type == "cuda" and not torch.cuda.is_available():
        return "CUDA is not available on this machine"
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        return f"this machine has {torch.cuda.device_count()} CUDA device(s)"
    return None


def full_profile_steps(params: Any, utkface_dir: Path) -> dict[str, int]:
    """Training steps of each listed method (not `identity`) with these params on the train split, less the
    validation split (`train.validation`), of a folder of UTKFace images: file names only (labels and
    splits), no image decoded."""
    import torch

    from agebench.data.faces import in_validation
    from agebench.data.prepare import group_of, list_files, parse_label, split_of
    from agebench.infra.registry import METHODS
    from agebench.params.reading import section
    from methods.base import TrainData

    labels = [(name, parse_label(name)) for name in list_files(utkface_dir)]
    held_out = params.train.validation
    ages = [
        lab.age
        for name, lab in labels
        if not isinstance(lab, str) and split_of(name) == "train" and not in_validation(name, held_out)
    ]
    schemes = params.groups.schemes()
    steps = {}
    for name in params.methods:
        cls = METHODS.get(name)
        groups = schemes[cls.scheme]
        names = tuple(groups)
        ids = [names.index(g) for g in (group_of(a, groups) for a in ages) if g]
        stub = TrainData(images={}, groups={cls.scheme: torch.tensor(ids)}, group_names={cls.scheme: names})
        # Built on the CPU only to ask for the schedule (untrained stand-ins for pretrained helpers).
        aux: dict[str, torch.nn.Module] = {}
        if "vgg16" in cls.aux_networks:
            from torchvision.models import vgg16

            aux["vgg16"] = vgg16(weights=None).features
        if "face_descriptor" in cls.aux_networks:
            aux["face_descriptor"] = torch.nn.Identity()
        method = cls(section(params.raw, name, cls.config_cls), names, torch.device("cpu"), aux)
        try:
            n = int(method.num_steps(stub))
        except ValueError:  # e.g. an empty group in a small folder: the default workload stands in
            n = FULL_PROFILE_STEPS.get(name, 0)
        if n > 0:  # `identity` trains nothing
            steps[name] = n
    return steps


def cpu_estimate_hours(steps: dict[str, int], cores: int) -> dict[str, float | None]:
    """Hours of training per method on a CPU with `cores` cores (None: no measured rate for the method)."""
    scale = REFERENCE_CORES / max(1, cores)
    return {
        name: (n * CPU_SECONDS_PER_STEP[name] * scale / 3600 if name in CPU_SECONDS_PER_STEP else None)
        for name, n in steps.items()
    }


def check_device(params: Any, data_source: Path | None) -> tuple[list[Problem], list[str]]:
    """Named devices exist; the full profile without a GPU stops with the estimate (unless allowed)."""
    import torch

    problems, notes = [], []
    for key, name in (("train.device", params.train.device), ("evaluate.device", params.evaluate.device)):
        reason = _device_ok(name)
        if reason:
            problems.append(Problem(f"{key}: {name!r} cannot be used: {reason}", f"set {key} to auto or cpu"))
    cuda = torch.cuda.is_available() and (params.train.device == "auto" or params.train.device.startswith("cuda"))
    notes.append(f"device: {'cuda (' + torch.cuda.get_device_name(0) + ')' if cuda else 'cpu'}")
    if cuda or params.profile != "full" or getattr(params.train, "allow_cpu_full", False):
        return problems, notes
    if data_source is not None and data_source.is_dir():
        steps, basis = full_profile_steps(params, data_source), "these params on the data source's train split"
    else:
        wanted = [m for m in params.methods if m != "identity"]
        steps = {m: FULL_PROFILE_STEPS[m] for m in wanted if m in FULL_PROFILE_STEPS}
        basis = "the default full profile on all of UTKFace"
    if not steps:  # nothing to train (e.g. only `identity`)
        return problems, notes
    cores = os.cpu_count() or 1
    hours = cpu_estimate_hours(steps, cores)
    known = {k: v for k, v in hours.items() if v is not None}
    per = ", ".join(f"{k} {v:,.0f} h" for k, v in known.items()) or "no measured rate for these methods"
    total = f"about {sum(known.values()):,.0f} hours" if known else "unknown (many hours)"
    from agebench.params.reading import PROFILES

    reduced = [p for p in PROFILES if p != "full"]
    commands = " or ".join(f"`profile: {p}`" for p in reduced)
    problems.append(
        Problem(
            f"profile full on a machine without a GPU: training alone would take {total} on this {cores}-core CPU "
            f"({per}; {basis}; rates measured on a {REFERENCE_CORES}-core CPU, scaled by cores)",
            f"set {commands} in params.yaml (or `dvc exp run -S profile={reduced[0]}`) for a reduced run, run on a "
            f"machine with a CUDA GPU, or set train.allow_cpu_full: true to train the full profile on this CPU anyway",
        )
    )
    return problems, notes


def run_checks(
    params_path: Path, data_dir: Path | None = None, probe: Callable[[str], str | None] = _reachable
) -> Report:
    """All checks for the params file `params_path`; `data_dir` defaults to `data/` beside it.

    `probe(url)` answers None when the URL is reachable, else the reason (replaced in tests).
    """
    from agebench.infra.errors import UserError
    from agebench.params.load import load_params, params_problems

    report = Report()
    # Every section of every profile, each method's with its own config class, before anything else:
    # a typo in a method's section must not wait for that method's training to start.
    for line in params_problems(params_path):
        report.problems.append(Problem(line, f"edit {params_path}"))
    try:
        params = load_params(params_path)
    except UserError as exc:  # a bad value or an unknown method name
        if not report.problems:
            report.problems.append(Problem(str(exc), f"edit {params_path}"))
        return report
    base = params_path.parent
    data_dir = data_dir if data_dir is not None else base / "data"
    report.notes.append(f"params: {params_path} (profile {params.profile}; methods {', '.join(params.methods)})")
    data_problems, n_files = check_data(params.data, base, data_dir, probe)
    report.problems += data_problems
    report.problems += check_backbones()
    report.problems += check_method_files(params, base, probe)
    report.problems += check_disk(params.data, data_dir, n_files)
    from agebench.data.download import is_url, resolve_source

    located = None if is_url(params.data.source) else Path(resolve_source(params.data.source, base))
    if located is None and (data_dir / "raw" / "UTKFace").is_dir():
        located = data_dir / "raw" / "UTKFace"
    device_problems, device_notes = check_device(params, located)
    report.problems += device_problems
    report.notes += device_notes
    from agebench.infra.preflight_speed import check_training_speed  # times real steps only under a declared budget

    speed = check_training_speed(params, located)
    report.problems += [Problem(what, fix) for what, fix in speed.problems]
    report.notes += speed.notes
    return report


def preflight(params_path: Path, prog: str, data_dir: Path | None = None) -> int:
    """Run the checks, print problems (stderr) with their fixes; 0 when clear, else 2.

    `data_dir`: where the pipeline keeps its data (`data/` beside the params file by default).
    """
    started = time.monotonic()
    report = run_checks(params_path, data_dir)
    if report.problems:
        print(f"{prog}: pre-flight stopped the run ({time.monotonic() - started:.1f} s)", file=sys.stderr)
        print(report.text(), file=sys.stderr)
        return 2
    print(f"{prog}: pre-flight ok ({time.monotonic() - started:.1f} s)")
    print(report.text())
    return 0


def measure_cpu(params_path: Path, utkface_dir: Path, fractions: tuple[float, ...] = (0.0,)) -> dict[str, float]:
    """Seconds per training step of each listed method on this CPU (the CPU_SECONDS_PER_STEP table).

    The real `sample_batch` + `train_step` at each fraction of the method's full schedule (one warm-up
    step, then one timed step), on 64 random faces per group (throughput does not depend on content).
    One point is enough for today's methods: cyclegan_keras's progressive schedule keeps the pixels per
    step constant (32 x 64^2 = 8 x 128^2 = 2 x 256^2) and the others train at one size. Minutes, not
    seconds: the maintainer's tool behind the documented table, not part of the pre-flight.
    """
    import torch
    from torchvision.models import vgg16

    from agebench.infra.registry import METHODS
    from agebench.params.load import load_params
    from agebench.params.reading import section
    from methods.base import TrainData

    params = load_params(params_path)
    steps = full_profile_steps(params, utkface_dir)
    out = {}
    for name, total in steps.items():
        cls = METHODS.get(name)
        aux = {"vgg16": vgg16().features.eval().requires_grad_(False)} if "vgg16" in cls.aux_networks else {}
        names = tuple(params.groups.schemes()[cls.scheme])
        method = cls(section(params.raw, name, cls.config_cls), names, torch.device("cpu"), aux)
        labels = torch.arange(len(names)).repeat_interleave(64)
        g = torch.Generator().manual_seed(0)
        sizes = method.train_resolutions() if hasattr(method, "train_resolutions") else (method.resolution,)
        images = {r: torch.randint(0, 256, (len(labels), 3, r, r), dtype=torch.uint8, generator=g) for r in sizes}
        data = TrainData(images, {cls.scheme: labels}, {cls.scheme: names})
        method.num_steps(data)  # some methods set up their schedule here
        times = []
        for frac in fractions:
            s = int(frac * total)
            method.train_step(method.sample_batch(data, s, g), s)  # warm-up
            t = time.perf_counter()
            method.train_step(method.sample_batch(data, s + 1, g), s + 1)
            times.append(time.perf_counter() - t)
        out[name] = sum(times) / len(times)
        print(f"{name}: {out[name]:.3f} s/step x {total:,} steps = {out[name] * total / 3600:,.1f} h", flush=True)
    return out
