"""Time the LM head's projection of k rows through the module's [V, H] weight, through a
[H, V] copy and as a chunked [V, k] product transposed to [k, V] (framework.head.RowHead's
three ways), on this machine:

    python -m experiments.head_layout --threads 2

Prints the median milliseconds per projection for k = 1, 2, 3, 4, 8, 16, 24, 32 (20 runs each,
interleaved), then the argmax over 15 freshly projected rows (a W=15 window's top level): ``torch.argmax``
against ``framework.argmax.argmax_rows``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import torch

from experiments.cli import add_model_arguments, load_model_from_args, run_command, set_threads
from framework.argmax import argmax_rows
from framework.head import RowHead


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m experiments.head_layout", description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=20)
    add_model_arguments(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    return run_command(build_parser(), argv, run)


@torch.inference_mode()
def run(args: argparse.Namespace) -> int:
    threads = set_threads(args.threads)
    model, _ = load_model_from_args(args)
    module = model.get_output_embeddings()
    row_head = RowHead(module)
    print(f"head {tuple(module.weight.shape)} {module.weight.dtype} | {model.device}, {threads}")
    ways = {"[V, H] module": module}
    if row_head.weight is not None:  # a plain linear head on the CPU
        ways.update({"[H, V] copy": row_head.by_copy, "[V, k] chunked": row_head.by_chunks})
    for rows in (1, 2, 3, 4, 8, 16, 24, 32):
        hidden = torch.randn(rows, module.weight.shape[1], dtype=module.weight.dtype, device=model.device)
        times = {name: [] for name in ways if rows > 1 or name != "[V, k] chunked"}
        for _ in range(args.runs):
            for name, head in ((name, ways[name]) for name in times):
                start = time.perf_counter()
                head(hidden)
                times[name].append(time.perf_counter() - start)
        print(f"rows {rows:2d}: " + ", ".join(f"{name} {1000 * statistics.median(t):.2f} ms" for name, t in times.items()))
    hidden = torch.randn(15, module.weight.shape[1], dtype=module.weight.dtype, device=model.device)
    times = {"torch.argmax": [], "argmax_rows": []}
    for _ in range(args.runs):
        for name, argmax in (("torch.argmax", lambda s: s.argmax(dim=-1)), ("argmax_rows", argmax_rows)):
            scores = module(hidden)  # [15, V], just written, as in a step
            start = time.perf_counter()
            argmax(scores)
            times[name].append(time.perf_counter() - start)
    print("argmax of 15 rows: " + ", ".join(f"{name} {1000 * statistics.median(t):.2f} ms" for name, t in times.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
