"""The machine fingerprint: what decides whether two CPU trainings can be bit-identical.

Training on the CPU is deterministic on one machine, yet two machines train differently: oneDNN and
MKL pick kernels and their blocking by CPU model and instruction set, and a thread count changes the
order of every reduction. Two runs can be compared bit for bit only when all of that is equal, so the
fingerprint holds exactly those fields. Scoring a fixed set of images is not affected (measured: the
`identity` and `real` rows are equal to the last digit on an AMD EPYC and an Intel Xeon), which is
why the gate compares them exactly everywhere (`agebench.gate.check`).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

#: Instruction-set flags that change which kernels oneDNN / MKL / ONNX Runtime run.
ISA_FLAGS = (
    "avx",
    "avx2",
    "fma",
    "f16c",
    "avx512f",
    "avx512bw",
    "avx512vl",
    "avx512_vnni",
    "avx512_bf16",
    "avx512_fp16",
    "amx_tile",
    "amx_bf16",
    "amx_int8",
)


def _cpuinfo_field(text: str, name: str) -> str:
    m = re.search(rf"^{name}\s*:\s*(.*)$", text, re.MULTILINE)
    return m.group(1).strip() if m else ""


def machine_fingerprint(threads: int | None = None, cpuinfo: str | None = None) -> dict[str, Any]:
    """The fields that make two CPU trainings bit-comparable.

    `threads`: the torch thread count the run used (`train.threads`; None reads torch's current one).
    `cpuinfo`: the text of /proc/cpuinfo (read when None; empty where there is none).
    Returns {vendor, model, isa (sorted list of ISA_FLAGS present), torch, onednn, threads}.
    """
    import torch

    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
        except OSError:
            cpuinfo = ""
    flags = set(_cpuinfo_field(cpuinfo, "flags").split())
    onednn = ""
    m = re.search(r"(?:oneDNN|MKL-DNN) v([0-9.]+)", torch.__config__.show())
    if m:
        onednn = m.group(1)
    return {
        "vendor": _cpuinfo_field(cpuinfo, "vendor_id") or "unknown",
        "model": _cpuinfo_field(cpuinfo, "model name") or "unknown",
        "isa": sorted(f for f in ISA_FLAGS if f in flags),
        "torch": torch.__version__,
        "onednn": onednn,
        "threads": int(threads) if threads else torch.get_num_threads(),
    }


def fingerprint_differences(a: dict[str, Any] | None, b: dict[str, Any] | None) -> list[str]:
    """The fields on which two fingerprints differ, as 'field: a != b' lines ([] when equal).

    A missing fingerprint (None) differs from everything: a baseline that does not say where it was
    made can never be compared bit for bit.
    """
    if not a or not b:
        return ["fingerprint: not recorded"]
    keys = sorted(set(a) | set(b))
    return [f"{k}: {a.get(k)!r} != {b.get(k)!r}" for k in keys if a.get(k) != b.get(k)]
