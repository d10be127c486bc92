"""A Kedro dataset for Lightning modules saved with their hyper-parameters."""

from __future__ import annotations

import importlib
from pathlib import Path, PurePosixPath
from typing import Any

import torch
from kedro.io import AbstractDataset, DatasetError


class LightningModuleDataset(AbstractDataset[Any, Any]):
    """A LightningModule on disk: ``{"class", "hyper_parameters", "state_dict"}`` via torch.save.

    Loading rebuilds the module from its saved hyper-parameters (``save_hyperparameters()``) and
    loads the weights, so the file alone is enough to use the model anywhere.

    ```yaml
    vq_vae_model:
      type: persona_shoppers.datasets.LightningModuleDataset
      filepath: data/06_models/vq_vae.pt
    ```
    """

    def __init__(self, filepath: str, metadata: dict[str, Any] | None = None):
        self._filepath = PurePosixPath(filepath)
        self.metadata = metadata

    def load(self) -> Any:
        payload = torch.load(self._filepath, map_location="cpu", weights_only=False)
        module_name, _, class_name = payload["class"].rpartition(".")
        model_class = getattr(importlib.import_module(module_name), class_name)
        model = model_class(**payload["hyper_parameters"])
        model.load_state_dict(payload["state_dict"])
        return model.eval()

    def save(self, model: Any) -> None:
        if not hasattr(model, "hparams"):
            raise DatasetError(
                f"{type(model).__name__} has no hparams: call save_hyperparameters()"
            )
        Path(self._filepath).parent.mkdir(parents=True, exist_ok=True)
        payload = {
            "class": f"{type(model).__module__}.{type(model).__qualname__}",
            "hyper_parameters": dict(model.hparams),
            "state_dict": model.state_dict(),
        }
        torch.save(payload, self._filepath)

    def _exists(self) -> bool:
        return Path(self._filepath).exists()

    def _describe(self) -> dict[str, Any]:
        return {"filepath": str(self._filepath)}
