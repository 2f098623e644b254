"""Pre-flight training-speed check: time a few real training steps of each configured method on this
machine, estimate its whole training in core-minutes, and stop before a run that would take far longer
than the profile declares (`train.budget_core_minutes`).

Why: the same profile can run at very different speeds on two CPUs. bfloat16 autocast was measured
1.1-2.1x faster than float32 on two x86 CPUs (Intel Xeon; AMD EPYC Zen 4) and 15-40x slower on
another AMD EPYC (avx512_bf16, no AMX), where a 13-minute training would have taken 11 hours. The
check turns that into an error in seconds, naming the method, the rate and the fix.

A chain of pure steps, each testable on its own:
`measure_step_rate` (a built method, synthetic batches of the right shape -> `StepRate`), then
`SpeedEstimate` (rate x the method's step count -> core-minutes), then `verdict` (estimate -> None
or (what, fix)). `check_training_speed` wires them for a params file (the one call in
`agebench.infra.preflight`); its `measure` argument lets tests inject a rate.

Core-minutes are CPU time (all threads of this process), not wall time: the budget is about the work
a training needs, and on a machine shared with other jobs the wall rate drops with the load much
more than the CPU time per step does (that rose ~10% at load 4 and up to 2x at load 6 on 2 vCPUs,
through shared caches and cores, so a stop on a busy machine says so). The check runs only where a
budget is declared (> 0) and training runs on the CPU: the smoke profile declares none, so the smoke
and CI paths pay nothing for it.
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from methods.base import Method, TrainData

#: An estimate more than this many times the declared budget stops the run.
OVER_BUDGET_FACTOR = 2.0
#: Timed steps per method (after one untimed warm-up step), spread evenly over the schedule so that a
#: method with stages of different cost (Age-cGAN's cGAN and encoder steps) is sampled in each.
TIMED_STEPS = 3
#: Timing stops once this many CPU-seconds are spent on a method (at least one step is always timed),
#: so a pathologically slow setting costs the pre-flight two of its steps, not the whole step count.
MAX_SECONDS_PER_METHOD = 12.0

#: Training faces per group of UTKFace's train split (PROTOCOL.md s.1 sha1 split, by file name) for the
#: default `groups:`, counted once from the 23,708 files; used to count a method's steps when the data
#: is not on this machine yet (the download stage runs the pre-flight first).
UTKFACE_TRAIN_GROUP_SIZES: dict[str, dict[str, int]] = {
    "pair": {"young": 6642, "old": 2085},
    "cgan6": {"0-18": 4017, "19-29": 6731, "30-39": 4085, "40-49": 2003, "50-59": 2085, "60+": 2431},
    "decades": {"10s": 1355, "20s": 6642, "30s": 4085, "40s": 2003, "50s": 2085, "60s": 1192},
}


@dataclasses.dataclass(frozen=True)
class StepRate:
    """What timing a method's training steps on this machine measured."""

    method: str
    #: Steps timed (after the warm-up step) and the images their batches held (both domains).
    steps: int
    images: int
    #: CPU time of this process over the timed steps (all threads: core-seconds), and wall time.
    cpu_seconds: float
    wall_seconds: float
    #: Intra-op threads in effect, and whether the step's convolutions / linear layers ran in bfloat16
    #: (observed on their outputs during the warm-up step, not read from a switch).
    threads: int
    bf16: bool
    #: The 1-minute load average when timing ended (other jobs slow the wall rate, not the CPU time).
    load: float

    @property
    def steps_per_core_second(self) -> float:
        return self.steps / max(self.cpu_seconds, 1e-9)

    @property
    def images_per_core_second(self) -> float:
        return self.images / max(self.cpu_seconds, 1e-9)

    @property
    def steps_per_second(self) -> float:
        return self.steps / max(self.wall_seconds, 1e-9)

    @property
    def images_per_second(self) -> float:
        return self.images / max(self.wall_seconds, 1e-9)

    def text(self) -> str:
        """e.g. "0.88 steps/s, 14.1 images/s per core (fp32, 1 thread)"."""
        precision = "bf16 autocast" if self.bf16 else "fp32"
        return (
            f"{self.steps_per_core_second:.3g} steps/s, {self.images_per_core_second:.3g} images/s per core "
            f"({precision}, {self.threads} thread{'s' * (self.threads != 1)}; wall {self.steps_per_second:.3g} "
            f"steps/s at load {self.load:.1f})"
        )


@dataclasses.dataclass(frozen=True)
class SpeedEstimate:
    """A method's whole training on this machine at the measured rate, against its declared budget."""

    rate: StepRate
    #: Training steps of the method's schedule on the training data.
    total_steps: int
    #: `train.budget_core_minutes`: the declared training budget per method and seed.
    budget_core_minutes: float

    @property
    def core_minutes(self) -> float:
        return self.total_steps / self.rate.steps_per_core_second / 60

    @property
    def over_budget(self) -> bool:
        """More than OVER_BUDGET_FACTOR times the budget (only the budget stops a run, not noise)."""
        return self.core_minutes > OVER_BUDGET_FACTOR * self.budget_core_minutes


def cpu_has_amx() -> bool:
    """True when this CPU has AMX bf16 tiles (/proc/cpuinfo flag `amx_bf16`; False where unreadable)."""
    try:
        return " amx_bf16" in Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return False


def verdict(estimate: SpeedEstimate, has_amx: bool) -> tuple[str, str] | None:
    """None when the estimate is within OVER_BUDGET_FACTOR x the budget, else (what is wrong, the fix)."""
    if not estimate.over_budget:
        return None
    r = estimate.rate
    what = (
        f"{r.method}: training would take about {estimate.core_minutes:,.0f} core-minutes on this CPU, "
        f"over {OVER_BUDGET_FACTOR:g}x the declared train.budget_core_minutes ({estimate.budget_core_minutes:g}): "
        f"{estimate.total_steps:,} steps at the measured {r.text()}"
    )
    if r.bf16:
        like = ", as this one has none" if not has_amx else ""
        fix = (
            f"set {r.method}.amp_bf16: false and train.bf16: false in params.yaml (float32, the same on every "
            f"machine; bf16 autocast ran 15-40x slower than float32 on a CPU without AMX{like}), or lower "
            f"{r.method}'s step count"
        )
    else:
        fix = (
            f"lower {r.method}'s step count (max_steps, or its epochs) in params.yaml to fit the budget, "
            f"run on a faster machine, or raise train.budget_core_minutes if this machine is the reference"
        )
    cores = os.cpu_count() or 1
    if r.load > cores:  # other jobs share the cores: CPU time per step rises too (shared caches, SMT)
        fix += f"; this machine was busy (load {r.load:.1f} on {cores} cores): rerun the pre-flight when it is idle"
    return what, fix


def batch_images(batch: Mapping[str, torch.Tensor]) -> int:
    """Images in a batch: the rows of its 4-d tensors, or the batch size when it holds none (latents only)."""
    n = sum(int(v.shape[0]) for v in batch.values() if v.dim() == 4)
    return n or int(next(iter(batch.values())).shape[0])


def synthetic_data(
    labels: Mapping[str, torch.Tensor], names: Mapping[str, tuple[str, ...]], sizes: tuple[int, ...]
) -> TrainData:
    """TrainData with the given group labels and, at each size, one random uint8 face seen as every face
    (an expanded view: no memory per face). A method's schedule depends on the labels only and a step's
    cost does not depend on the pixels, so its steps time as on the real data."""
    n = len(next(iter(labels.values())))
    gen = torch.Generator().manual_seed(0)
    images = {
        r: torch.randint(0, 256, (1, 3, r, r), dtype=torch.uint8, generator=gen).expand(n, -1, -1, -1) for r in sizes
    }
    return TrainData(images=images, groups=dict(labels), group_names=dict(names))


#: Layers whose output dtype shows the precision a step computes in.
_COMPUTE_LAYERS = (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)


def measure_step_rate(
    name: str,
    method: Method,
    data: TrainData,
    threads: int,
    timed_steps: int = TIMED_STEPS,
    max_seconds: float = MAX_SECONDS_PER_METHOD,
) -> StepRate:
    """Time `method`'s real `sample_batch` + `train_step` on `data` with `threads` intra-op threads
    (0: torch's default).

    One untimed warm-up step (first-call allocations; it also observes whether the method's layers
    compute in bfloat16), then up to `timed_steps` steps at step indices spread evenly over the
    schedule (`num_steps(data)`), stopping early once `max_seconds` of CPU time are spent. The
    method's weights change (it trains); the global RNG state is restored afterwards.
    """
    from agebench.infra.speed import networks, num_threads

    total = max(int(method.num_steps(data)), 1)
    gen = torch.Generator().manual_seed(0)
    positions = [i * total // timed_steps for i in range(timed_steps)]
    steps = images = 0
    cpu = wall = 0.0
    dtypes: set[torch.dtype] = set()
    layers = [m for net in networks(method) for m in net.modules() if isinstance(m, _COMPUTE_LAYERS)]
    hooks = [m.register_forward_hook(lambda _m, _i, out: dtypes.add(out.dtype)) for m in layers]
    with torch.random.fork_rng(devices=[]), num_threads(threads):
        torch.manual_seed(0)
        try:
            method.train_step(method.sample_batch(data, 0, gen), 0)
        finally:
            for h in hooks:
                h.remove()
        for step in positions:
            c0, t0 = time.process_time(), time.perf_counter()
            batch = method.sample_batch(data, step, gen)
            method.train_step(batch, step)
            cpu += time.process_time() - c0
            wall += time.perf_counter() - t0
            steps += 1
            images += batch_images(batch)
            if cpu >= max_seconds:
                break
        used = torch.get_num_threads()
    return StepRate(name, steps, images, cpu, wall, used, torch.bfloat16 in dtypes, os.getloadavg()[0])


def train_group_labels(
    groups: Any, scheme: str, source_dir: Path | None, subsample: float, validation: float = 0.0
) -> torch.Tensor:
    """(N,) int64 group index (-1: in no group) of every training face of `scheme`, the validation split
    (`train.validation`, never trained on) left out: from the file names of a local UTKFace folder when
    there is one, else from UTKFACE_TRAIN_GROUP_SIZES (default groups only; each size times
    1 - `validation`, the split's expected share, since its hash cannot be applied to counts).

    Raises LookupError when neither applies (groups changed and no local data)."""
    from agebench.data.faces import in_validation
    from agebench.data.prepare import group_of, in_subsample, list_files, parse_label, split_of
    from agebench.params.sections import GroupsConfig

    bounds = groups.schemes()[scheme]
    names = tuple(bounds)
    if source_dir is not None and source_dir.is_dir():
        ids = []
        for file in list_files(source_dir):
            label = parse_label(file)
            if isinstance(label, str) or split_of(file) != "train" or not in_subsample(file, subsample):
                continue
            if in_validation(file, validation):
                continue
            g = group_of(label.age, bounds)
            ids.append(names.index(g) if g else -1)
        return torch.tensor(ids, dtype=torch.int64)
    if groups.schemes()[scheme] != GroupsConfig().schemes()[scheme]:
        raise LookupError(f"groups.{scheme} differs from the default and the data is not on this machine")
    sizes = UTKFACE_TRAIN_GROUP_SIZES[scheme]
    kept = subsample * (1.0 - validation)
    return torch.cat([torch.full((round(sizes[g] * kept),), i, dtype=torch.int64) for i, g in enumerate(names)])


@dataclasses.dataclass(frozen=True)
class SpeedCheck:
    """What `check_training_speed` found: `problems` as (what, fix) stop the run; `notes` inform."""

    problems: tuple[tuple[str, str], ...] = ()
    notes: tuple[str, ...] = ()
    estimates: tuple[SpeedEstimate, ...] = ()


def check_training_speed(
    params: Any,
    source_dir: Path | None,
    measure: Callable[..., StepRate] | None = None,
    has_amx: bool | None = None,
) -> SpeedCheck:
    """Time each listed method at the profile's configuration and compare with `train.budget_core_minutes`.

    Skipped (one note) when no budget is declared (0) or training runs on a GPU. Each method is built as
    the train stage builds it (its params section, `train.bf16` / `channels_last`, stand-in aux networks;
    `train.compile` is not timed: compiling takes minutes), trained on synthetic faces with the real
    group sizes (`source_dir`: a local UTKFace folder, or None), and its step count is the schedule's on
    those sizes. `measure` replaces `measure_step_rate` (tests inject a rate); `has_amx` replaces the
    CPU's flag.
    """
    from agebench.infra.devices import select_device
    from agebench.infra.speed import prepare_for_speed

    tc = params.train
    budget = float(getattr(tc, "budget_core_minutes", 0.0))
    if budget <= 0:
        return SpeedCheck(notes=("training speed: no train.budget_core_minutes declared, not checked",))
    if select_device(tc.device).type != "cpu":
        return SpeedCheck(notes=(f"training speed: trains on {tc.device}, the core-minute budget is not checked",))
    measure = measure or measure_step_rate
    has_amx = cpu_has_amx() if has_amx is None else has_amx
    problems, notes, estimates = [], [], []
    started = time.monotonic()
    for name in params.methods:
        try:
            method = _build(name, params)
        except (OSError, LookupError, ValueError) as exc:  # missing weights and the like: reported elsewhere
            notes.append(f"training speed: {name} not timed ({type(exc).__name__}: {str(exc)[:120]})")
            continue
        try:
            labels = train_group_labels(
                params.groups, method.scheme, source_dir, params.data.subsample, params.train.validation
            )
        except LookupError as exc:
            notes.append(f"training speed: {name} not timed ({exc})")
            continue
        names = tuple(params.groups.schemes()[method.scheme])
        data = synthetic_data({method.scheme: labels}, {method.scheme: names}, method.train_resolutions())
        total = int(method.num_steps(data))
        if method.parameter_count() == 0:  # nothing to train (identity)
            continue
        if total < 1:
            notes.append(f"training speed: {name} not timed (its schedule gives 0 steps on these group sizes)")
            continue
        prepare_for_speed(method, tc.channels_last, tc.bf16, False)
        rate = measure(name, method, data, tc.threads)
        estimate = SpeedEstimate(rate, total, budget)
        estimates.append(estimate)
        notes.append(
            f"training speed: {name} ~{estimate.core_minutes:,.1f} core-minutes for {total:,} steps "
            f"(budget {budget:g}; {rate.text()})"
        )
        found = verdict(estimate, has_amx)
        if found:
            problems.append(found)
    notes.append(f"training speed measured in {time.monotonic() - started:.1f} s")
    return SpeedCheck(tuple(problems), tuple(notes), tuple(estimates))


def stand_in_aux(names: tuple[str, ...]) -> dict[str, nn.Module]:
    """Untrained, frozen aux networks of the real architecture: a training step costs the same with any
    weights, and the check must not read, verify or download weight files (missing ones are reported by
    the pre-flight's own file checks). "vgg16": torchvision's VGG-16 `features` (built on the meta device,
    so the 120M-parameter classifier is never allocated, then default-initialised); "face_descriptor":
    only Age-cGAN's latent optimisation uses it, never a training step, so an identity stands in."""
    out: dict[str, nn.Module] = {}
    for name in names:
        if name == "vgg16":
            import torchvision

            with torch.device("meta"):
                net = torchvision.models.vgg16(weights=None).features
            net = net.to_empty(device="cpu")
            for layer in net.modules():
                if isinstance(layer, nn.Conv2d):
                    layer.reset_parameters()
        elif name == "face_descriptor":
            net = nn.Identity()
        else:
            raise LookupError(f"no stand-in for aux network {name!r} (known: vgg16, face_descriptor)")
        out[name] = net.eval().requires_grad_(False)
    return out


def _build(name: str, params: Any) -> Method:
    """The method from its params section (stand-in aux networks), on the CPU, seeded from `train.seed`."""
    from agebench.infra.registry import METHODS
    from agebench.params.reading import section

    cls = METHODS.get(name)
    config = section(params.raw, name, cls.config_cls)
    names = tuple(params.groups.schemes()[cls.scheme])
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(params.train.seed)
        return cls(config, names, torch.device("cpu"), stand_in_aux(cls.aux_networks))
