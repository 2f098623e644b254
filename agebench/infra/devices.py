"""Devices: one place that turns a params `device` string into a torch.device."""

from __future__ import annotations

import torch


def select_device(name: str) -> torch.device:
    """ "auto" -> cuda when available, else cpu; otherwise the named device ("cpu", "cuda:1", ...)."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)
