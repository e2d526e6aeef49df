"""The one Weights & Biases logger of the experiments (bench, sweep): imported only with ``--wandb``.

Offline unless ``WANDB_MODE`` says otherwise, and quiet: W&B's own console chatter (about 25
lines a run) is off; each finished run prints one line on stderr saying where it went and how to
sync it. Runs are logged after the timed work, so W&B never overlaps a measurement.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any, Sequence


class WandbLogger:
    """Opens one W&B run per ``run()`` call, all in one project and group."""

    def __init__(self, project: str, group: str, out: Path, tags: Sequence[str] = (), config: dict | None = None):
        os.environ.setdefault("WANDB_MODE", "offline")
        os.environ.setdefault("WANDB_SILENT", "true")
        import wandb

        self.wandb, self.project, self.group, self.out = wandb, project, group[:120], Path(out)
        self.tags, self.config = [str(t)[:60] for t in tags], dict(config or {})
        self.out.mkdir(parents=True, exist_ok=True)

    def run(self, name: str, job_type: str, config: dict[str, Any] | None = None):
        settings = self.wandb.Settings(silent=True, console="off", show_info=False, show_warnings=False)
        return self.wandb.init(project=self.project, group=self.group, name=name, job_type=job_type, tags=self.tags,
                               config={**self.config, **(config or {})}, dir=str(self.out), settings=settings,
                               reinit="create_new")

    def table(self, rows: Sequence[dict[str, Any]]):
        """A W&B table from JSON-ready dicts (lists and dicts stored as JSON text)."""
        columns = list(dict.fromkeys(key for row in rows for key in row))
        data = [[json.dumps(row.get(c)) if isinstance(row.get(c), (list, dict)) else row.get(c) for c in columns]
                for row in rows]
        return self.wandb.Table(columns=columns, data=data)

    def images(self, paths: Sequence[Path]) -> dict[str, Any]:
        return {Path(p).stem: self.wandb.Image(str(p)) for p in paths if Path(p).exists()}

    def finish(self, run) -> None:
        """Finish ``run`` and say in one line where it went."""
        mode = os.environ.get("WANDB_MODE", "offline")
        where = run.settings.sync_dir if mode == "offline" else getattr(run, "url", None)
        run.finish()
        if mode == "offline":
            print(f"[wandb] offline run {run.name!r} in {where} (upload: wandb sync {where})", file=sys.stderr)
        elif mode != "disabled":
            print(f"[wandb] run {run.name!r}: {where}", file=sys.stderr)
