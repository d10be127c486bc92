"""One SFT stage end to end: data module, module, Lightning Trainer, checkpoints, export."""

from __future__ import annotations

import logging
import shutil
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint

from persona_shoppers.numerics import resolve_frozen_dtype, resolve_precision

from .data import SFTDataModule
from .module import PersonaSFTModule, StepMetricHistory
from .tokens import PersonaTokens

logger = logging.getLogger(__name__)


def _checkpointing(
    folder: str | Path | None, every_n_train_steps: int | None, resume: bool
) -> tuple[list[pl.Callback], str | None]:
    """The checkpoint callback for ``folder`` and the checkpoint to resume from, if any.

    Without ``resume`` an existing folder is emptied first: its checkpoints belong to an
    earlier run whose data or settings may differ."""
    if folder is None:
        return [], None
    folder = Path(folder)
    last = folder / "last.ckpt"
    ckpt_path = None
    if resume and last.exists():
        ckpt_path = str(last.resolve())
        logger.info("resuming from %s", ckpt_path)
    elif folder.exists():
        logger.info("starting afresh: removing the earlier checkpoints in %s", folder)
        shutil.rmtree(folder)
    callback = ModelCheckpoint(
        dirpath=folder,
        filename="{step}",
        every_n_train_steps=every_n_train_steps,
        save_top_k=1,
        save_last="link",
    )
    return [callback], ckpt_path


def _fit_validation_interval(
    trainer: Mapping[str, Any], batches: int, name: str
) -> Mapping[str, Any]:
    """``trainer`` with an integer ``val_check_interval`` of more batches than an epoch has (few
    examples: a small log, a small budget) lowered to once per epoch, with a warning; Lightning
    stops on it otherwise."""
    interval = trainer.get("val_check_interval")
    if isinstance(interval, int) and not isinstance(interval, bool) and interval > batches:
        logger.warning(
            "%s: val_check_interval %d is more than the %d training batches of an epoch; "
            "validating once per epoch",
            name,
            interval,
            batches,
        )
        return {**trainer, "val_check_interval": batches}
    return trainer


def train_stage(
    model: Any,
    tokenizer: Any,
    persona: PersonaTokens,
    train_conversations: Sequence[Sequence[dict]],
    val_conversations: Sequence[Sequence[dict]],
    backbone: str,
    optimizer: Mapping[str, Any],
    data: Mapping[str, Any],
    trainer: Mapping[str, Any],
    seed: int,
    lora: Mapping[str, Any] | None = None,
    top_layers: int | None = None,
    cache_frozen: bool = True,
    early_stopping: Mapping[str, Any] | None = None,
    gradient_checkpointing: bool = False,
    frozen_dtype: str | None = None,
    checkpoint_dir: str | Path | None = None,
    checkpoint_every_n_steps: int | None = None,
    resume: bool = False,
    history_every_n_steps: int = 1,
    validate_before: bool = False,
    name: str = "sft",
) -> tuple[Any, dict[str, list[dict[str, float]]]]:
    """Train ``model`` (in place) on the conversations with ``backbone`` ``frozen`` | ``lora`` |
    ``top`` | ``full``; returns the exported Hugging Face model and the metric history (train and
    validation loss, learning rate, data counts, wall time) for MLflow.

    ``optimizer`` holds :class:`PersonaSFTModule` arguments (lr, weight_decay, warmup_steps,
    min_lr_ratio, betas, fused), ``data`` :class:`SFTDataModule` arguments (max_length,
    batch_size, packing, flatten, share_prefix, ...), ``trainer`` Lightning ``Trainer`` arguments
    (accelerator, devices, strategy, precision, max_steps, max_epochs, accumulate_grad_batches,
    ...). ``frozen_dtype`` (``backbone: frozen`` only, ignored otherwise): the dtype the frozen
    weights are held in while they train the persona rows. ``precision`` and ``frozen_dtype``
    may be ``auto`` (:mod:`persona_shoppers.numerics`: bf16 only where the device runs it
    natively). ``early_stopping``: ``EarlyStopping`` arguments (monitor, mode, patience,
    min_delta), checked at every validation (``trainer.val_check_interval``); a wall-clock
    budget is the Trainer's ``max_time``. ``validate_before`` adds a
    validation of the starting model (step 0 of the ``val_loss`` curve).
    """
    pl.seed_everything(seed, workers=True)
    accelerator = trainer.get("accelerator", "auto")
    if "precision" in trainer:
        trainer = {**trainer, "precision": resolve_precision(trainer["precision"], accelerator)}
    if backbone == "frozen":
        frozen_dtype = resolve_frozen_dtype(frozen_dtype, accelerator)
    module = PersonaSFTModule(
        model,
        persona.first,
        persona.count,
        backbone=backbone,
        lora=dict(lora) if lora else None,
        top_layers=top_layers,
        cache_frozen=cache_frozen,
        gradient_checkpointing=gradient_checkpointing,
        frozen_dtype=frozen_dtype if backbone == "frozen" else None,
        **optimizer,
    )
    datamodule = SFTDataModule(tokenizer, train_conversations, val_conversations, seed=seed, **data)
    datamodule.setup("fit")  # tokenise here, once, in the calling process
    has_val = datamodule.reports["val"].kept > 0
    trainer = _fit_validation_interval(trainer, len(datamodule.train_dataloader()), name)
    history = StepMetricHistory(history_every_n_steps)
    checkpoints, ckpt_path = _checkpointing(checkpoint_dir, checkpoint_every_n_steps, resume)
    stopping = [EarlyStopping(**early_stopping)] if early_stopping and has_val else []
    trainable = sum(p.numel() for p in module.parameters() if p.requires_grad)
    logger.info(
        "%s: training %s parameters (backbone %s, precision %s%s) on %d examples, validating on %d",
        name,
        f"{trainable:,}",
        backbone,
        trainer.get("precision", "32-true"),
        f", frozen weights in {frozen_dtype}" if backbone == "frozen" and frozen_dtype else "",
        len(train_conversations),
        len(val_conversations),
    )
    fit = pl.Trainer(
        **({} if has_val else {"limit_val_batches": 0}),
        **trainer,
        callbacks=[history, *checkpoints, *stopping],
        logger=False,
        enable_checkpointing=bool(checkpoints),
        enable_model_summary=False,
    )
    if validate_before and has_val and ckpt_path is None:
        fit.validate(module, datamodule=datamodule, verbose=False)
    started = time.perf_counter()
    fit.fit(module, datamodule=datamodule, ckpt_path=ckpt_path)
    seconds = time.perf_counter() - started
    validated = history.history.get("val_loss", [])
    if has_val and (not validated or validated[-1]["step"] != fit.global_step):
        fit.validate(module, datamodule=datamodule, verbose=False)  # fit stopped mid-epoch
    metrics = history.history
    for split, report in datamodule.reports.items():
        for key, value in report.as_dict().items():
            metrics[f"{split}_{key}"] = [{"step": 0, "value": float(value)}]
    metrics["train_seconds"] = [{"step": fit.global_step, "value": seconds}]
    final = {k: v[-1]["value"] for k, v in metrics.items() if k in ("train_loss", "val_loss")}
    logger.info("%s: %d optimizer steps in %.0fs, %s", name, fit.global_step, seconds, final)
    return module.export(), metrics
