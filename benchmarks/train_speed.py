"""CycleGAN training throughput: the eager FP32 batch-1 reference step against ours, side by side.

Both rows run the same CycleGAN iteration of Zhu et al. as junyanz's `cycle_gan_model.py` does it
(ResNet-9 generators ngf 64, 70x70 PatchGAN discriminators ndf 64, LSGAN, cycle lambda 10, identity
0.5, 50-image pools, Adam 2e-4 / 0.5), built from `methods.blocks`, so only the engineering differs:

- reference: FP32, NCHW, eager, batch 1, PyTorch's default (foreach) Adam, a float batch copied from
  host memory every step (what junyanz's DataLoader hands over);
- ours: bf16 autocast, channels_last, `torch.compile` (CUDA), fused Adam, batch `--batch`, the
  prepared uint8 faces resident on the device with the flip augmentation done there
  (`methods.blocks.random_faces`), as `stages/train.py` feeds every method;
- method: `methods.cyclegan_keras`'s own `train_step` with the same switches, for the real code path
  (its networks are the Keras-GAN variant: no pools, a 4-layer discriminator).

Printed per resolution: images/s of each row, the speed-up over the reference, and the fraction of
the device's dense bf16 peak using 1.885 TFLOP per 256x256 image-iteration (0.47 at 128x128; scaled
by area elsewhere). Images are random uint8 tensors: throughput does not depend on content.

CPU mode (`--device cpu`): every trained method of a profile (default `cpu`), built from
params.yaml exactly as the train stage builds it, runs its real `sample_batch` + `train_step` on
random uint8 faces under several switch sets of `agebench.infra.speed` ("before" = today's settings:
float32, NCHW, torch's default threads). The variants run side by side, round-robin, so machine
load shared with other processes hits them alike; printed per method: images/s of each variant,
its ratio to "before", and the max relative loss difference to float32 over the first steps from
the same seed and batches (the bf16 keep/drop evidence). `--profile-step` prints torch.profiler's
top operators of the "before" step per method (where the time goes).

Usage: .venv/bin/python benchmarks/train_speed.py [--sizes 128 256] [--batch 16] [--steps 30]
       .venv/bin/python benchmarks/train_speed.py --device cpu [--profile cpu] [--rounds 3] [--steps 4]
       .venv/bin/python benchmarks/train_speed.py --device cpu --variants t1 t1_bf16 --loss-steps 0  # fp32 vs bf16
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import platform
import re
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch

from methods.base import TrainData, uint8_to_float
from methods.blocks import ImagePool, NLayerDiscriminator, ResnetGenerator, init_weights, lsgan_loss, random_faces

#: Dense bf16 tensor-core peak (TFLOP/s) by device name fragment (NVIDIA datasheets, without sparsity).
BF16_PEAK_TFLOPS = {"H200": 989.4, "H100 SXM": 989.4, "H100 80GB HBM3": 989.4, "H100 PCIe": 756.0,
                    "H100 NVL": 835.0, "H100": 756.0, "A100": 312.0, "L4": 121.0}  # fmt: skip
TFLOP_PER_IMAGE_256 = 1.885


class CycleGANIteration:
    """One junyanz CycleGAN optimisation step (G_A, G_B then D_A, D_B) with engineering switches."""

    def __init__(
        self, device: torch.device, ngf: int, amp: bool, channels_last: bool, compile: bool, fused: bool
    ) -> None:
        torch.manual_seed(0)
        self.device, self.amp, self.cl = device, amp, channels_last
        self.nets = {
            "G_A": ResnetGenerator(ngf=ngf, n_blocks=9),
            "G_B": ResnetGenerator(ngf=ngf, n_blocks=9),
            "D_A": NLayerDiscriminator(ndf=ngf),
            "D_B": NLayerDiscriminator(ndf=ngf),
        }
        for net in self.nets.values():
            init_weights(net, "normal", 0.02)
            net.to(device)
            if channels_last:
                net.to(memory_format=torch.channels_last)
        run = torch.compile if compile else (lambda m: m)
        self.run = {k: run(v) for k, v in self.nets.items()}
        kw = {"fused": True} if fused else {}
        g = [*self.nets["G_A"].parameters(), *self.nets["G_B"].parameters()]
        d = [*self.nets["D_A"].parameters(), *self.nets["D_B"].parameters()]
        self.opt_g = torch.optim.Adam(g, lr=2e-4, betas=(0.5, 0.999), **kw)
        self.opt_d = torch.optim.Adam(d, lr=2e-4, betas=(0.5, 0.999), **kw)
        self.pool_a, self.pool_b = ImagePool(50, 1), ImagePool(50, 2)

    def _ctx(self):
        return torch.autocast(self.device.type, torch.bfloat16, enabled=self.amp)

    def step(self, real_a: torch.Tensor, real_b: torch.Tensor) -> None:
        if self.cl:
            real_a = real_a.contiguous(memory_format=torch.channels_last)
            real_b = real_b.contiguous(memory_format=torch.channels_last)
        r = self.run
        for k in ("D_A", "D_B"):
            self.nets[k].requires_grad_(False)
        with self._ctx():
            fake_b, fake_a = r["G_A"](real_a), r["G_B"](real_b)
            rec_a, rec_b = r["G_B"](fake_b), r["G_A"](fake_a)
            idt_a, idt_b = r["G_A"](real_b), r["G_B"](real_a)
            loss_g = (
                lsgan_loss(r["D_A"](fake_b), True)
                + lsgan_loss(r["D_B"](fake_a), True)
                + 10 * (rec_a.float() - real_a).abs().mean()
                + 10 * (rec_b.float() - real_b).abs().mean()
                + 5 * (idt_a.float() - real_b).abs().mean()
                + 5 * (idt_b.float() - real_a).abs().mean()
            )
        self.opt_g.zero_grad(set_to_none=True)
        loss_g.backward()
        self.opt_g.step()
        for k in ("D_A", "D_B"):
            self.nets[k].requires_grad_(True)
        pooled_b, pooled_a = self.pool_b.query(fake_b.float()), self.pool_a.query(fake_a.float())
        with self._ctx():
            loss_d = 0.5 * (lsgan_loss(r["D_A"](real_b), True) + lsgan_loss(r["D_A"](pooled_b), False)) + 0.5 * (
                lsgan_loss(r["D_B"](real_a), True) + lsgan_loss(r["D_B"](pooled_a), False)
            )
        self.opt_d.zero_grad(set_to_none=True)
        loss_d.backward()
        self.opt_d.step()


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def images_per_second(step: Callable[[], None], images: int, steps: int, warmup: int, device: torch.device) -> float:
    """Images/s over `steps` timed steps after `warmup` untimed ones (compilation, autotuning)."""
    for _ in range(warmup):
        step()
    sync(device)
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    sync(device)
    return images * steps / (time.perf_counter() - t0)


def peak_tflops(device: torch.device, given: float | None) -> float | None:
    if given:
        return given
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((v for k, v in BF16_PEAK_TFLOPS.items() if k in name), None)


def bench_size(size: int, args: argparse.Namespace, device: torch.device) -> list[tuple[str, int, float]]:
    """(row, batch, images/s) of the reference, ours and (unless skipped) cyclegan_keras at `size`."""
    on_gpu = device.type == "cuda"
    gen = torch.Generator(device=device).manual_seed(0)
    faces = torch.randint(0, 256, (args.faces, 3, size, size), dtype=torch.uint8, device=device)
    data = TrainData(
        images={size: faces},
        groups={"pair": torch.arange(args.faces, device=device) % 2},
        group_names={"pair": ("young", "old")},
    )
    young, old = data.indices("pair", "young"), data.indices("pair", "old")
    host = uint8_to_float(faces[:64].cpu())  # the reference's loader output, in host memory

    ref = CycleGANIteration(device, args.ngf, amp=False, channels_last=False, compile=False, fused=False)
    k = [0]

    def ref_step() -> None:
        i = k[0] % (len(host) // 2)
        k[0] += 1
        ref.step(host[2 * i : 2 * i + 1].to(device), host[2 * i + 1 : 2 * i + 2].to(device))

    rows = [("reference (FP32 eager, batch 1)", 1, images_per_second(ref_step, 2, args.steps, args.warmup, device))]
    ours = CycleGANIteration(device, args.ngf, amp=True, channels_last=True, compile=on_gpu, fused=True)

    def our_step() -> None:
        ours.step(random_faces(data, size, young, args.batch, gen), random_faces(data, size, old, args.batch, gen))

    rows.append(("ours (bf16, channels_last, compile, fused Adam, data on device)", args.batch,
                 images_per_second(our_step, 2 * args.batch, args.steps, args.warmup, device)))  # fmt: skip
    if not args.skip_method:
        from methods.cyclegan_keras import CycleGANKeras, CycleGANKerasConfig

        cfg = CycleGANKerasConfig(ngf=args.ngf, ndf=args.ngf, sizes=(size,), epochs_per_size=(10_000,),
                                  batch_per_size=(args.batch,), amp_bf16=True, channels_last=True,
                                  compile=on_gpu)  # fmt: skip
        torch.manual_seed(0)
        method = CycleGANKeras(cfg, ("young", "old"), device)
        method.num_steps(data)  # sets up the size schedule
        counter = [0]

        def method_step() -> None:
            method.train_step(method.sample_batch(data, counter[0], gen), counter[0])
            counter[0] += 1

        rows.append(("cyclegan_keras.train_step (same switches)", args.batch,
                     images_per_second(method_step, 2 * args.batch, args.steps, args.warmup, device)))  # fmt: skip
    return rows


# ---- CPU mode: every method's real train step under agebench.infra.speed's switches -------------------


@dataclasses.dataclass(frozen=True)
class Variant:
    """One set of agebench.infra.speed switches (a `train:` section's threads / channels_last / bf16 / compile)."""

    label: str
    threads: int = 0
    channels_last: bool = False
    bf16: bool = False
    compile: bool = False
    #: True: the profile's own switches (train: threads/bf16/channels_last/compile and the method's
    #: amp_bf16/channels_last/compile); False: the method's own switches off, this variant's on.
    profile: bool = False
    #: Short name for `--variants`.
    key: str = ""


#: "before" is today's training: float32, NCHW, eager, torch's default threads (one per core);
#: "after" is the profile as configured. The others switch one thing at a time on top of one thread.
CPU_VARIANTS = (
    Variant("before (fp32, NCHW, default threads)", key="before"),
    Variant("after (the profile's switches)", profile=True, key="after"),
    Variant("default threads + bf16", bf16=True, key="bf16"),
    Variant("threads 1", threads=1, key="t1"),
    Variant("threads 1 + channels_last", threads=1, channels_last=True, key="t1_cl"),
    Variant("threads 1 + bf16", threads=1, bf16=True, key="t1_bf16"),
    Variant("threads 1 + bf16 + channels_last", threads=1, channels_last=True, bf16=True, key="t1_bf16_cl"),
)
COMPILE_VARIANT = Variant(
    "threads 1 + bf16 + channels_last + compile", 1, channels_last=True, bf16=True, compile=True, key="compile"
)


def profile_params(params_path: Path, profile: str) -> dict:
    """params.yaml's raw mapping with `profile` selected (the file's own `profile:` line is ignored)."""
    from agebench.params.reading import read_params

    text = params_path.read_text(encoding="utf-8")
    with tempfile.TemporaryDirectory() as tmp:
        tmp_params = Path(tmp) / "params.yaml"
        tmp_params.write_text(re.sub(r"(?m)^profile: .*$", f"profile: {profile}", text), encoding="utf-8")
        raw = read_params(tmp_params)
    raw["_file"] = str(params_path)
    return raw


def schedule_train_data(raw: dict, scheme: str, resolutions: tuple[int, ...], faces: int) -> TrainData:
    """Synthetic faces with UTKFace's train-split group sizes (agebench.infra.preflight_speed), so that a
    method's schedule, and so which stage a step index falls in (Age-cGAN's cGAN vs encoder steps), is
    the real one; `faces` random faces spread evenly over the groups when the groups are not the default."""
    from agebench.infra.preflight_speed import synthetic_data, train_group_labels
    from agebench.params.reading import section
    from agebench.params.sections import GroupsConfig

    groups = section(raw, "groups", GroupsConfig)
    names = tuple(groups.schemes()[scheme])
    try:
        labels = train_group_labels(groups, scheme, None, 1.0)
    except LookupError:
        return random_train_data(names, scheme, resolutions, faces)
    return synthetic_data({scheme: labels}, {scheme: names}, resolutions)


def random_train_data(names: tuple[str, ...], scheme: str, resolutions: tuple[int, ...], faces: int) -> TrainData:
    """`faces` random uint8 faces per resolution, spread evenly over the scheme's groups."""
    gen = torch.Generator().manual_seed(0)
    base = torch.randint(0, 256, (faces, 3, max(resolutions), max(resolutions)), dtype=torch.uint8, generator=gen)
    images = {r: torch.nn.functional.interpolate(base.float(), size=(r, r), mode="area").round().to(torch.uint8)
              for r in resolutions}  # fmt: skip
    return TrainData(images=images, groups={scheme: torch.arange(faces) % len(names)}, group_names={scheme: names})


def build_cpu_method(name: str, raw: dict, vgg_weights: str, variant: Variant, seed: int = 0):
    """The registered method `name` from the profile's section, seeded, with `variant`'s switches."""
    from agebench.infra.aux_networks import load_aux
    from agebench.infra.registry import METHODS
    from agebench.infra.speed import prepare_for_speed
    from agebench.params.reading import section
    from agebench.params.sections import GroupsConfig, TrainConfig

    cls = METHODS.get(name)
    config = section(raw, name, cls.config_cls)
    if variant.profile:
        train = section(raw, "train", TrainConfig)
        variant = Variant(variant.label, train.threads, train.channels_last, train.bf16, train.compile, True)
    else:  # today's settings: the method's own engineering switches off
        off = {k: False for k in ("amp_bf16", "channels_last", "compile") if hasattr(config, k)}
        config = dataclasses.replace(config, **off)
    if hasattr(config, "weights_path") and not config.weights_path and vgg_weights:
        config = dataclasses.replace(config, weights_path=vgg_weights)
    names = tuple(section(raw, "groups", GroupsConfig).schemes()[cls.scheme])
    torch.manual_seed(seed)
    method = cls(config, names, torch.device("cpu"), load_aux(cls.aux_networks, config, torch.device("cpu")))
    method = prepare_for_speed(method, variant.channels_last, variant.bf16, variant.compile)
    if variant.profile:  # the label says what ran
        on = [k for k in ("amp_bf16", "channels_last") if getattr(config, k, False)]
        on += [k for k in ("bf16", "channels_last", "compile") if getattr(variant, k)]
        variant = dataclasses.replace(
            variant, label=f"after: threads {variant.threads or 'default'}, {', '.join(on) or 'fp32'}"
        )
    return method, names, variant


class MethodRunner:
    """One method instance under one variant, stepping through its own batch stream."""

    def __init__(self, name: str, raw: dict, vgg_weights: str, variant: Variant, faces: int) -> None:
        self.method, _, self.variant = build_cpu_method(name, raw, vgg_weights, variant)
        self.data = schedule_train_data(raw, self.method.scheme, self.method.train_resolutions(), faces)
        self.total = self.method.num_steps(self.data)
        self.gen = torch.Generator().manual_seed(0)
        self.step_no = 0
        self.images = 0
        self.seconds = 0.0
        self.sample_seconds = 0.0
        self.cpu_seconds = 0.0

    def batch(self) -> dict[str, torch.Tensor]:
        """The next batch of the method's own sampler (a stage-2 step past the last stage-1 one)."""
        return self.method.sample_batch(self.data, self.step_no % max(self.total, 1), self.gen)

    def run(self, steps: int, timed: bool = True) -> list[dict[str, float]]:
        """`steps` loop iterations (sample_batch + train_step) under the variant's threads and autocast."""
        from agebench.infra.speed import num_threads

        out = []
        with num_threads(self.variant.threads):
            for _ in range(steps):
                t0, c0 = time.perf_counter(), time.process_time()
                batch = self.batch()
                t1 = time.perf_counter()
                out.append(self.method.train_step(batch, self.step_no % max(self.total, 1)))
                t2, c2 = time.perf_counter(), time.process_time()
                self.step_no += 1
                if timed:
                    self.images += sum(int(v.shape[0]) for v in batch.values() if v.dim() == 4) or int(
                        next(iter(batch.values())).shape[0]
                    )
                    self.seconds += t2 - t0
                    self.sample_seconds += t1 - t0
                    self.cpu_seconds += c2 - c0
        return out


def max_relative_loss_difference(
    name: str, raw: dict, vgg_weights: str, variant: Variant, steps: int, faces: int
) -> float:
    """Max over the first `steps` steps and every named loss of |l_variant - l_fp32| / max(|l_fp32|, 1e-3),
    both runs from the same seed on the same batches."""
    ref = MethodRunner(name, raw, vgg_weights, CPU_VARIANTS[0], faces)
    var = MethodRunner(name, raw, vgg_weights, variant, faces)
    torch.manual_seed(1)  # the same global RNG stream (dropout) for both
    a = ref.run(steps, timed=False)
    torch.manual_seed(1)
    b = var.run(steps, timed=False)
    return max(abs(y[k] - x[k]) / max(abs(x[k]), 1e-3) for x, y in zip(a, b) for k in x)


def profile_step(runner: MethodRunner, steps: int, top: int) -> str:
    """torch.profiler's top operators (self CPU time) over `steps` steps of `runner`."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        runner.run(steps, timed=False)
    return prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=top)


def cpu_main(args: argparse.Namespace) -> None:
    """Images/s of each method's real train step under each variant, side by side, and loss agreement."""
    params_path = Path(args.params)
    raw = profile_params(params_path, args.profile)
    names = [m for m in args.methods or raw.get("methods", []) if m != "identity"]
    variants = [*CPU_VARIANTS, *([COMPILE_VARIANT] if args.compile else [])]
    if args.variants:  # the first one chosen is the base of the "x base" column
        by_key = {v.key: v for v in (*CPU_VARIANTS, COMPILE_VARIANT)}
        variants = [by_key[k] for k in args.variants]
    load = os.getloadavg()
    print(f"device: CPU ({os.cpu_count()} cores, {platform.machine()}); torch {torch.__version__}; "
          f"default threads {torch.get_num_threads()}; profile {args.profile}; load average at start "
          f"{load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")  # fmt: skip
    print(f"{args.rounds} rounds x {args.steps} timed steps per variant, round-robin, after {args.warmup} warm-up")
    for name in names:
        runners = [MethodRunner(name, raw, args.vgg_weights, v, args.faces) for v in variants]
        if args.profile_step:
            print(f"\n### {name}: where the time goes (before, {args.steps} steps)\n")
            print(profile_step(runners[0], args.steps, args.top))
        for r in runners:
            r.run(args.warmup, timed=False)
        for _ in range(args.rounds):
            for r in runners:
                r.run(args.steps)
        base = runners[0].images / runners[0].seconds
        print(f"\n### {name} ({runners[0].method.resolution} px, {runners[0].method.parameter_count():,} "
              f"parameters; load now {os.getloadavg()[0]:.2f})\n")  # fmt: skip
        print(f"| variant | images/s | x {variants[0].key} | images per CPU-s | sample_batch share "
              f"| max rel. loss diff vs fp32 |")  # fmt: skip
        print("|---|---:|---:|---:|---:|---:|")
        for r in runners:
            ips = r.images / r.seconds
            diff = "–"
            if args.loss_steps and (r.variant.profile or r.variant.bf16 or r.variant.channels_last):
                rel = max_relative_loss_difference(name, raw, args.vgg_weights, r.variant, args.loss_steps, args.faces)
                diff = f"{rel:.2e}"
            per_cpu_s, share = r.images / r.cpu_seconds, r.sample_seconds / r.seconds
            print(f"| {r.variant.label} | {ips:.2f} | {ips / base:.2f} | {per_cpu_s:.2f} | {share:.1%} | {diff} |")
        del runners


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[128, 256])
    ap.add_argument("--batch", type=int, default=16, help="our batch size (the reference uses 1)")
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--ngf", type=int, default=64, help="64 as junyanz; smaller only for a CPU check")
    ap.add_argument("--faces", type=int, default=512, help="random uint8 faces resident on the device")
    ap.add_argument("--peak-tflops", type=float, default=None, help="dense bf16 peak if the device is not known")
    ap.add_argument("--skip-method", action="store_true", help="do not time cyclegan_keras's train_step")
    cpu = ap.add_argument_group("CPU mode (--device cpu)")
    ap.add_argument("--device", choices=["auto", "cpu"], default="auto", help="cpu: the CPU mode")
    cpu.add_argument("--params", default="params.yaml")
    cpu.add_argument("--profile", default="cpu", help="params profile whose method settings are timed")
    cpu.add_argument("--methods", nargs="+", default=None, help="default: the profile's trained methods")
    cpu.add_argument("--rounds", type=int, default=3, help="round-robin rounds over the variants")
    cpu.add_argument("--loss-steps", type=int, default=2, help="steps compared with fp32 per variant (0: skip)")
    cpu.add_argument("--variants", nargs="+", default=None, choices=[v.key for v in (*CPU_VARIANTS, COMPILE_VARIANT)],
                     help="time only these variants (default: all but compile); e.g. t1 t1_bf16 for fp32 vs bf16 "
                     "on one thread")  # fmt: skip
    cpu.add_argument("--compile", action="store_true", help="also time torch.compile (minutes to compile)")
    cpu.add_argument("--profile-step", action="store_true", help="print torch.profiler's top operators")
    cpu.add_argument("--top", type=int, default=12, help="operators shown by --profile-step")
    cpu.add_argument("--vgg-weights", default="../shared/weights/vgg16_features_imagenet.pth",
                     help="VGG-16 features state dict when the profile's weights_path is empty")  # fmt: skip
    args = ap.parse_args()
    if args.device == "cpu":
        if "--steps" not in sys.argv:
            args.steps = 4
        if "--warmup" not in sys.argv:
            args.warmup = 2
        cpu_main(args)
        return
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    on_gpu = device.type == "cuda"
    if on_gpu:
        torch.backends.cudnn.benchmark = True
    name = torch.cuda.get_device_name(device) if on_gpu else f"CPU ({os.cpu_count()} cores, {platform.machine()})"
    peak = peak_tflops(device, args.peak_tflops)
    print(f"device: {name}; torch {torch.__version__}; bf16 peak: {peak or 'unknown'} TFLOP/s")
    print(f"ngf {args.ngf}; our batch {args.batch}; {args.steps} timed steps after {args.warmup} warm-up steps")
    print("| size | row | batch | images/s | x reference | TFLOP/s | of bf16 peak |")
    print("|---:|---|---:|---:|---:|---:|---:|")
    for size in args.sizes:
        rows = bench_size(size, args, device)
        base_of = {size: rows[0][2]}
        for row, batch, ips in rows:
            # One iteration consumes a pair (A, B) = 2 images; 1.885 TFLOP is per batch-1 iteration (a pair).
            tflop = TFLOP_PER_IMAGE_256 * (size / 256) ** 2 * (args.ngf / 64) ** 2
            tps = ips / 2 * tflop
            frac = f"{tps / peak:.1%}" if peak else "–"
            print(f"| {size} | {row} | {batch} | {ips:.1f} | {ips / base_of[size]:.2f} | {tps:.1f} | {frac} |")
    if not on_gpu:
        print("note: this is the GPU comparison run on a CPU; for the CPU track's methods use --device cpu.")


if __name__ == "__main__":
    main()
