"""A Lightning callback that keeps every epoch's logged metrics, for MLflow metric histories."""

from __future__ import annotations

import lightning.pytorch as pl


class EpochMetricHistory(pl.Callback):
    """Records ``trainer.callback_metrics`` once per training epoch (validation included).

    ``history`` maps a metric name to ``[{"step": epoch, "value": v}, ...]``: the format of
    kedro-mlflow's ``MlflowMetricsHistoryDataset``. An epoch is recorded when the next one
    starts (or training ends), so metrics the module logs in its own epoch-end hooks, which
    run after the callbacks', are included.
    """

    def __init__(self) -> None:
        self.history: dict[str, list[dict[str, float]]] = {}
        self._epochs_recorded = 0

    def _record(self, trainer: pl.Trainer) -> None:
        for name, value in trainer.callback_metrics.items():
            point = {"step": self._epochs_recorded, "value": float(value)}
            self.history.setdefault(name.replace("/", "_"), []).append(point)
        self._epochs_recorded += 1

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.current_epoch > self._epochs_recorded:
            self._record(trainer)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._record(trainer)
