"""The Kedro datasets the project adds (``type: persona_shoppers.datasets.<Name>`` in the
catalog): Lightning modules with their hyper-parameters, Hugging Face model folders."""

from .huggingface_model import (
    HuggingFaceModelDataset,
    ModelAndTokenizer,
    SavedModel,
    save_model_folder,
)
from .lightning_module import LightningModuleDataset

__all__ = [
    "HuggingFaceModelDataset",
    "LightningModuleDataset",
    "ModelAndTokenizer",
    "SavedModel",
    "save_model_folder",
]
