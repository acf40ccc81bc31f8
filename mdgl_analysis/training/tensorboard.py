"""Metrics as TensorBoard scalars (``run.tensorboard = true``), for live curves.

``metrics.csv`` stays the source of truth; this mirrors each of its rows as the scalar
``SPLIT/NAME`` at step ``iteration`` under ``RUN/tensorboard/``. A resumed run purges the events
from its checkpoint's iteration on, as it drops the newer rows of ``metrics.csv``, so no step is
written twice.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from mdgl_analysis.config import Config, ConfigError

FOLDER = "tensorboard"


def check_available(cfg: Config) -> None:
    """ConfigError (one line) when ``run.tensorboard`` is on and TensorBoard is not installed."""
    if not cfg.run.tensorboard:
        return
    try:
        import torch.utils.tensorboard  # noqa: F401
    except ImportError:
        raise ConfigError(
            "run.tensorboard = true needs TensorBoard: pip install 'mdgl-analysis[tensorboard]'"
        ) from None


class Scalars:
    """Writes metric rows ``(iteration, split, name, value)`` as TensorBoard scalars."""

    def __init__(self, run_path: Path, first_iteration: int):
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(
            log_dir=str(Path(run_path) / FOLDER), purge_step=first_iteration or None
        )

    def add(self, rows: Iterable[tuple[int, str, str, float]]) -> None:
        for iteration, split, name, value in rows:
            self.writer.add_scalar(f"{split}/{name}", value, iteration)
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()
