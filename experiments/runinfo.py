"""Run metadata for every record, report and W&B run: when, which commit, which machine, under what
load, with which versions. Needs nothing beyond torch and the standard library."""

from __future__ import annotations

import datetime as dt
import importlib.metadata
import os
import platform
import subprocess
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parent.parent


def now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def git_commit() -> str | None:
    """Short commit of the checkout, ``+dirty`` with uncommitted changes to tracked files."""
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                                text=True, timeout=5).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT,
                               capture_output=True, text=True, timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return f"{commit}{'+dirty' if dirty else ''}" if commit else None


def loadavg() -> list[float] | None:
    """The 1, 5 and 15-minute load averages; None where the OS has none."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except (OSError, AttributeError):
        return None


def device_name(device: torch.device) -> str:
    """The GPU's name, or the CPU's model name."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "cpu"


def describe_device(device: torch.device) -> str:
    """``AMD EPYC 7B13 (cpu, 2 threads)`` or ``NVIDIA H200 (cuda)``: the key a study or a
    comparison of timings needs (the thread count changes CPU timings)."""
    if device.type == "cpu":
        threads = torch.get_num_threads()
        return f"{device_name(device)} (cpu, {threads} thread{'s' if threads > 1 else ''})"
    return f"{device_name(device)} ({device.type})"


def versions() -> dict[str, str]:
    found = {"python": platform.python_version(), "torch": torch.__version__}
    for name in ("transformers", "pydantic", "numpy", "optuna", "lookahead-decoding"):
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            found[name] = "not installed"
    return found


def environment(model) -> dict[str, Any]:
    """Everything about the machine and the model that a timing depends on."""
    device = model.device
    return {
        "date": now(), "git": git_commit(),
        "model_class": type(model).__name__,
        "dtype": str(next(model.parameters()).dtype).removeprefix("torch."),
        "attn": getattr(model.config, "_attn_implementation", None),
        "device": str(device), "device_name": device_name(device),
        "torch_threads": torch.get_num_threads(), "interop_threads": torch.get_num_interop_threads(),
        "cpu_count": os.cpu_count(), "loadavg": loadavg(),
        "platform": platform.platform(), "versions": versions(),
    }
