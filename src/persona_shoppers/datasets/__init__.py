"""The Kedro datasets the project adds (``type: persona_shoppers.datasets.<Name>`` in the
catalog): Lightning modules with their hyper-parameters, Hugging Face model folders, a JSON
file a run may lack, an event table split by buyer into parquet parts."""

from .buyer_buckets import BuyerBucketsDataset
from .huggingface_model import (
    HuggingFaceModelDataset,
    ModelAndTokenizer,
    SavedModel,
    save_model_folder,
)
from .lightning_module import LightningModuleDataset
from .optional_json import OptionalJSONDataset

__all__ = [
    "BuyerBucketsDataset",
    "HuggingFaceModelDataset",
    "LightningModuleDataset",
    "ModelAndTokenizer",
    "OptionalJSONDataset",
    "SavedModel",
    "save_model_folder",
]
