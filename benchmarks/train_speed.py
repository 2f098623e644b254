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

Usage: .venv/bin/python benchmarks/train_speed.py [--sizes 128 256] [--batch 16] [--steps 30]
       (on CPU, try --sizes 64 --steps 3 --warmup 1 --ngf 16 --batch 4 for a quick mechanics check)
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from collections.abc import Callable

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
    args = ap.parse_args()
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
        print("note: CPU run: no torch.compile, and bf16 autocast is usually slower than FP32 on CPUs; the >= 3x")
        print("      target is for an H100 (see the issue 4 note).")


if __name__ == "__main__":
    main()
