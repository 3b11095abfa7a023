"""Lightning's CSV logger, made to survive a resume.

Lightning's ``CSVLogger`` deletes ``metrics.csv`` when it opens a folder that has one, so a run
resumed from ``last.ckpt`` would lose every row written before the interruption. This subclass
reads the old rows first and keeps those the checkpoint covers (``epoch <= ckpt epoch`` and
``step <= ckpt step``); rows logged after the checkpoint are dropped, since the resumed run logs
those steps again.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

from lightning.pytorch.loggers import CSVLogger as LightningCSVLogger


class CSVLogger(LightningCSVLogger):
    """``lightning.pytorch.loggers.CSVLogger`` plus :meth:`resume_from`."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._kept: list[dict[str, Any]] = []

    def resume_from(self, epoch: int, step: int) -> None:
        """Keep the existing rows up to the checkpoint's ``epoch`` and ``step`` (call before the
        first metric is logged)."""
        path = Path(self.log_dir) / "metrics.csv"
        if not path.is_file():
            return
        with open(path, newline="") as f:
            rows = list(csv.DictReader(f))

        def covered(row: dict[str, str]) -> bool:
            return int(float(row.get("epoch") or 0)) <= epoch and int(float(row.get("step") or 0)) <= step

        def values(row: dict[str, str]) -> dict[str, Any]:
            return {k: int(float(v)) if k in ("epoch", "step") else float(v) for k, v in row.items() if v != ""}

        self._kept = [values(row) for row in rows if covered(row)]

    @property
    def experiment(self) -> Any:
        first = self._experiment is None
        writer = super().experiment  # (this is where Lightning removes the old file)
        if first and self._kept:
            for row in self._kept:
                step = int(row.pop("step"))
                writer.log_metrics(row, step)
            self._kept = []
        return writer
