"""The device cost model: what a forward feeding k tokens costs, relative to feeding one.

Which step pays depends on the device: on a 2-core CPU an 8-token forward costs ~1.5 one-token
forwards eager (NOTES), on an H200 a forward of the default model costs the same up to hundreds
of tokens. A scheduler that knows the curve can decide, per step, whether a draft tree is worth
its price (``strategies/scheduler_adaptive.py``).

``calibrate`` times a few forwards of the engine's own step (eager or compiled, at the sizes the
step takes) over a short cached prefix: well under a second eager on the default model. The
curve is cached on disk per (model, device, dtype, threads, torch, compiled, sizes), as JSON that
a sweep's output or a user can also hand over (``CostModel.load``).

Example: points {1: 1.0, 8: 1.5, 32: 2.3} -> cost(4) = 1.5 (the next measured size up: padding
never makes a step cheaper), cost(40) = 2.3 * 40 / 32 (linear past the largest point).
"""

from __future__ import annotations

import hashlib
import json
import os
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch


@dataclass
class CostModel:
    """Relative cost of a forward by fed tokens: ``points[k]`` = time(k) / time(1)."""

    points: dict[int, float]
    key: dict = field(default_factory=dict)  # what it was measured on
    seconds_per_forward: float = 0.0  # time(1), for reports

    def __post_init__(self) -> None:
        self.points = {int(k): float(v) for k, v in sorted(self.points.items())}
        if 1 not in self.points:
            raise ValueError(f"a cost model needs the cost of a 1-token forward, got sizes {sorted(self.points)}")

    def __call__(self, tokens: int) -> float:
        """Cost of a forward of ``tokens`` fed tokens, in one-token forwards."""
        for size, cost in self.points.items():
            if size >= tokens:
                return cost
        largest = max(self.points)
        return self.points[largest] * tokens / largest

    @classmethod
    def flat(cls) -> "CostModel":
        """Every size costs one forward: a large GPU (the number of steps is the speed)."""
        return cls({1: 1.0, 1 << 30: 1.0})

    def to_json(self) -> dict:
        return {"points": self.points, "key": self.key, "seconds_per_forward": self.seconds_per_forward}

    @classmethod
    def load(cls, path: str | os.PathLike) -> "CostModel":
        data = json.loads(Path(path).read_text())
        return cls({int(k): v for k, v in data["points"].items()}, data.get("key", {}),
                   data.get("seconds_per_forward", 0.0))

    def save(self, path: str | os.PathLike) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        temporary.write_text(json.dumps(self.to_json(), indent=1))
        temporary.replace(path)


def calibration_sizes(largest: int, compiled_sizes: tuple[int, ...] | None = None) -> list[int]:
    """The sizes timed: the compiled ones, else 1, 2 and powers of 4 up to the largest step."""
    if compiled_sizes is not None:
        return sorted(set(compiled_sizes))
    sizes, size = [1, 2], 8
    while size < largest:
        sizes.append(size)
        size *= 4
    return sorted(set(sizes + [max(largest, 1)]))


def cache_key(model, sizes: list[int], compiled: bool) -> dict:
    device = model.device
    name = getattr(model.config, "_name_or_path", "") or model.config.model_type
    return {
        "model": str(name), "layers": model.config.num_hidden_layers, "device": str(device.type),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else os.uname().machine,
        "dtype": str(model.dtype), "threads": torch.get_num_threads(), "torch": torch.__version__,
        "compiled": compiled, "sizes": sizes,
    }


def cache_file(key: dict) -> Path:
    root = Path(os.environ.get("LOOKAHEAD_CACHE", Path.home() / ".cache" / "lookahead"))
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    return root / "costs" / f"{digest}.json"


def calibrate(forward: Callable[[int], None], sizes: list[int], repeats: int = 3,
              clock: Callable[[], float] = time.perf_counter) -> tuple[dict[int, float], float]:
    """``forward(k)`` runs (and syncs) one forward of k tokens. Returns relative costs and time(1).
    Sizes are timed round-robin, each once unrecorded first, the median of ``repeats`` kept."""
    for size in sizes:
        forward(size)
    times: dict[int, list[float]] = {size: [] for size in sizes}
    for _ in range(repeats):
        for size in sizes:
            start = clock()
            forward(size)
            times[size].append(clock() - start)
    one = statistics.median(times[1])
    points = {size: max(statistics.median(t) / one, 1.0) for size, t in times.items()}
    # a bigger forward never costs less than a smaller one (noise, kernel quirks): keep the curve monotone
    running = 1.0
    for size in sorted(points):
        running = points[size] = max(points[size], running)
    return points, one
