"""The SFT LightningModule: a causal LM trained on its assistant tokens, with persona-token rows
that can train on their own (SimPersona 2.3, appendix G). ``backbone`` chooses what trains:
``frozen`` (stage 1: the persona rows only), ``lora``, ``top`` (the upper ``top_layers``
decoder layers and the final norm) or ``full`` (stage 2).

See docs/sft.md, "The two stages", "Speed", "Batches and attention" and
"Checkpoints and resume".
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from collections.abc import Callable, Iterator
from typing import Any

import lightning.pytorch as pl
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .attention import (
    flatten_batch,
    flatten_like,
    segment_attention_problem,
    use_segment_attention,
)
from .data import IGNORE
from .tokens import PersonaTokens, is_tied

logger = logging.getLogger(__name__)

BACKBONES = ("frozen", "lora", "top", "full")


def warmup_cosine(
    warmup_steps: int, total_steps: Callable[[], int], min_lr_ratio: float = 0.0
) -> Callable[[int], float]:
    """LR multiplier per optimizer step: linear warm-up to 1, then cosine to ``min_lr_ratio``
    at ``total_steps()`` (called only for steps after the warm-up)."""

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        if step == warmup_steps:
            return 1.0
        span = max(1, total_steps() - warmup_steps)
        progress = min(1.0, (step - warmup_steps) / span)
        return min_lr_ratio + (1 - min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))

    return factor


def action_accuracy(logits: Tensor, labels: Tensor, decision: Tensor) -> tuple[int, int]:
    """(examples whose action type the greedy answer gets right, examples with one): an
    example counts as right when the most likely token is the label at every position that
    predicts its type (``decision`` holds the example's number there, -1 elsewhere)."""
    marked = decision >= 0
    examples = decision[marked]
    wrong = (logits[marked].argmax(dim=-1) != labels[marked]).long()
    errors = torch.zeros(int(examples.max()) + 1, dtype=torch.long).index_add_(0, examples, wrong)
    decided = torch.unique(examples)
    return int((errors[decided] == 0).sum()), int(decided.numel())


def train_upper_layers(model: Any, count: int | None) -> None:
    """Freeze ``model`` except its upper ``count`` decoder layers and final norm (a Llama-like
    decoder: ``base_model.layers`` and ``base_model.norm``)."""
    decoder = model.base_model
    layers, norm = getattr(decoder, "layers", None), getattr(decoder, "norm", None)
    if layers is None or norm is None:
        raise ValueError(
            f"backbone 'top' needs a decoder with `layers` and `norm`; {type(model).__name__} "
            "has none: use backbone 'full' or 'lora'"
        )
    if not isinstance(count, int) or not 1 <= count <= len(layers):
        raise ValueError(f"top_layers must be an integer in 1..{len(layers)}, got {count!r}")
    model.requires_grad_(False)
    for module in [*layers[len(layers) - count :], norm]:
        module.requires_grad_(True)


class PersonaSFTModule(pl.LightningModule):
    """Fine-tunes ``model`` (a Hugging Face causal LM that already has the persona tokens, ids
    ``persona_first .. persona_first + persona_count - 1``) in place.

    Args:
        backbone: ``frozen`` | ``lora`` | ``top`` | ``full`` (see the module docstring).
        top_layers: ``backbone: top``: how many of the upper decoder layers train; the layers
            below and the embeddings (persona rows included) run forward only, without
            activations kept for a backward.
        cache_frozen: ``backbone: top``: keep the frozen layers' output of every batch (by
            split and batch number) and reuse it in later epochs and validations, instead of
            recomputing it (memory: hidden size x tokens x 4 bytes per example).
        lr, weight_decay, betas: AdamW (no decay on 1-d parameters: norms, biases).
        warmup_steps, min_lr_ratio: linear warm-up, then cosine decay to ``min_lr_ratio * lr``
            at the last optimizer step (``trainer.estimated_stepping_batches``).
        lora: ``peft.LoraConfig`` arguments for ``backbone: lora``.
        gradient_checkpointing: recompute activations in backward (memory for time); batches
            then train as padded rows, not flattened.
        frozen_dtype: ``backbone: frozen`` only: the dtype the frozen weights are held in
            while training (``"bfloat16"``), or None to leave them as they are.
        fused: the fused AdamW step where the device has it (one kernel for
            all parameters); else, and under FSDP or float16 loss scaling, ``foreach``.
    """

    def __init__(
        self,
        model: Any,
        persona_first: int,
        persona_count: int,
        backbone: str = "frozen",
        lr: float = 1e-3,
        weight_decay: float = 0.0,
        betas: tuple[float, float] = (0.9, 0.999),
        warmup_steps: int = 0,
        min_lr_ratio: float = 0.0,
        lora: dict[str, Any] | None = None,
        top_layers: int | None = None,
        cache_frozen: bool = True,
        gradient_checkpointing: bool = False,
        frozen_dtype: str | None = None,
        fused: bool = True,
    ) -> None:
        super().__init__()
        self.save_hyperparameters(ignore=["model"])
        if backbone not in BACKBONES:
            raise ValueError(f"backbone must be one of {BACKBONES}, got {backbone!r}")
        if frozen_dtype is not None and backbone != "frozen":
            raise ValueError("frozen_dtype applies to backbone 'frozen' only")
        self.persona = PersonaTokens(persona_first, persona_count)
        if model.get_input_embeddings().weight.shape[0] < self.persona.stop:
            raise ValueError("the model's embeddings do not cover the persona token ids")
        self.tied = is_tied(model)
        if backbone == "lora":
            from peft import LoraConfig, get_peft_model

            model = get_peft_model(model, LoraConfig(**(lora or {})))
        elif backbone == "top":
            train_upper_layers(model, top_layers)
        else:
            model.requires_grad_(backbone == "full")
        self.model = model.train()  # an exported model comes in eval mode
        self.persona_rows: nn.Parameter | None = None
        self.persona_output_rows: nn.Parameter | None = None
        if backbone in ("frozen", "lora"):
            span = slice(self.persona.first, self.persona.stop)
            causal_lm = self.causal_lm
            self.persona_rows = nn.Parameter(
                causal_lm.get_input_embeddings().weight[span].detach().clone()
            )
            if not self.tied:
                self.persona_output_rows = nn.Parameter(
                    causal_lm.get_output_embeddings().weight[span].detach().clone()
                )
        if gradient_checkpointing:
            self.causal_lm.gradient_checkpointing_enable(
                gradient_checkpointing_kwargs={"use_reentrant": False}
            )
        # float32 originals of the frozen weights held in frozen_dtype, put back at export
        self._frozen_originals: dict[str, Tensor] = {}
        if frozen_dtype is not None:
            dtype = getattr(torch, frozen_dtype)
            for name, param in self.model.named_parameters():
                if not param.requires_grad and param.is_floating_point():
                    self._frozen_originals[name] = param.data
                    param.data = param.data.to(dtype)
        self._flat_problem: str | None = None  # why flattened batches cannot run, once known
        self._frozen_outputs: dict[tuple, Tensor] = {}  # backbone top: (split, batch) -> hidden
        self.strict_loading = False  # checkpoints hold the trainable parameters only

    @property
    def causal_lm(self) -> Any:
        """The Hugging Face causal LM (inside the peft wrapper for LoRA)."""
        return self.model.get_base_model() if self.hparams.backbone == "lora" else self.model

    # ------------------------------------------------------------------ forward and loss

    def _embed(self, input_ids: Tensor) -> Tensor:
        embeds = self.causal_lm.get_input_embeddings()(input_ids)
        if self.persona_rows is None:
            return embeds
        offset = input_ids - self.persona.first
        is_persona = (offset >= 0) & (offset < self.persona.count)
        if not bool(is_persona.any()):  # no persona token: no graph to the rows
            return embeds
        rows = self.persona_rows[offset[is_persona]].to(embeds.dtype)
        return embeds.masked_scatter(is_persona[..., None], rows)

    def _logits(self, hidden: Tensor) -> Tensor:
        logits = self.causal_lm.get_output_embeddings()(hidden)
        if self.persona_rows is None:
            return logits.float()
        rows = self.persona_rows if self.tied else self.persona_output_rows
        persona = F.linear(hidden, rows.to(hidden.dtype)).to(logits.dtype)
        first, stop = self.persona.first, self.persona.stop
        return torch.cat([logits[:, :first], persona, logits[:, stop:]], dim=1).float()

    def forward(self, input_ids: Tensor, position_ids: Tensor) -> Tensor:
        """Last hidden states (B, L, H); rows may hold several examples (position ids restart
        at 0 for each), which then attend within themselves only."""
        return self._decode(self._embed(input_ids), position_ids)

    def _decode(self, embeds: Tensor, position_ids: Tensor, **kwargs: Any) -> Tensor:
        return self.causal_lm.base_model(
            inputs_embeds=embeds, position_ids=position_ids, use_cache=False, **kwargs
        ).last_hidden_state

    @contextlib.contextmanager
    def _running(self, part: str) -> Iterator[None]:
        """The decoder runs only its frozen lower layers (``part="lower"``, without the final
        norm: their output is the upper layers' input) or its trained upper ones."""
        decoder = self.causal_lm.base_model
        layers, norm = decoder.layers, decoder.norm
        split = len(layers) - self.hparams.top_layers
        decoder.layers = layers[:split] if part == "lower" else layers[split:]
        if part == "lower":
            decoder.norm = nn.Identity()
        try:
            yield
        finally:
            decoder.layers, decoder.norm = layers, norm

    def _hidden(
        self, ids: Tensor, positions: Tensor, cache_key: tuple | None, **kwargs: Any
    ) -> Tensor:
        """Last hidden states of the token rows; with ``backbone: top``, the frozen lower
        layers' output comes from the cache when ``cache_key`` is there (``cache_frozen``)."""
        if self.hparams.backbone != "top":
            return self._decode(self._embed(ids), positions, **kwargs)
        lower = self._frozen_outputs.get(cache_key) if cache_key is not None else None
        if lower is None:
            with torch.no_grad(), self._running("lower"):
                lower = self._decode(self._embed(ids), positions, **kwargs)
            if cache_key is not None and self.hparams.cache_frozen:
                self._frozen_outputs[cache_key] = lower
        with self._running("upper"):
            return self._decode(lower, positions, **kwargs)

    def _flat_inputs(self, batch: dict[str, Tensor]) -> tuple[Tensor, ...] | None:
        """(ids, positions, labels, decision, segments) of the batch flattened into one row
        without padding (:func:`~persona_shoppers.sft.attention.flatten_batch`), or None where
        it cannot run (then the padded rows run)."""
        if "lengths" not in batch:
            return None
        if self.hparams.gradient_checkpointing and torch.is_grad_enabled():
            return None  # the recomputed attention would not see the segments
        if self._flat_problem is None:
            problem = segment_attention_problem(self.causal_lm, batch["input_ids"].device)
            self._flat_problem = problem or ""
            if problem:
                logger.warning("SFT batches run as padded rows: flattening needs %s", problem)
        if self._flat_problem:
            return None
        ids, positions, labels, segments = flatten_batch(batch)
        decision = flatten_like(batch, batch["decision"]) if "decision" in batch else None
        return ids, positions, labels, decision, segments

    def outputs(
        self, batch: dict[str, Tensor], cache_key: tuple | None = None
    ) -> tuple[Tensor, Tensor, Tensor | None]:
        """(logits at the labelled positions, their labels, the example number of each of
        them that predicts an action type, else -1; None without ``decision``)."""
        flat = self._flat_inputs(batch)
        if flat is not None:
            ids, positions, labels, decision, segments = flat
            with use_segment_attention(self.causal_lm):
                hidden = self._hidden(ids, positions, cache_key, persona_segments=segments)
        else:
            ids, positions, labels = batch["input_ids"], batch["position_ids"], batch["labels"]
            decision = batch.get("decision")
            hidden = self._hidden(ids, positions, cache_key)
        labelled = labels != IGNORE
        decision = decision[labelled] if decision is not None else None
        return self._logits(hidden[labelled]), labels[labelled], decision

    def loss(
        self, batch: dict[str, Tensor], cache_key: tuple | None = None
    ) -> tuple[Tensor, Tensor]:
        """(mean cross-entropy over labelled positions, number of labelled positions)."""
        logits, labels, _ = self.outputs(batch, cache_key)
        return F.cross_entropy(logits, labels), torch.tensor(labels.numel())

    def _shared_step(self, batch: dict[str, Tensor], split: str) -> tuple[Tensor, Tensor]:
        key = (split, int(batch["batch_index"])) if "batch_index" in batch else None
        logits, labels, decision = self.outputs(batch, key)
        loss = F.cross_entropy(logits, labels)
        self.log(
            f"{split}_loss",
            loss,
            on_step=split == "train",
            on_epoch=split == "val",
            prog_bar=True,
            batch_size=labels.numel(),  # epoch means weighted by labelled tokens
            sync_dist=split == "val",
        )
        if split == "val" and decision is not None and bool((decision >= 0).any()):
            correct, decided = action_accuracy(logits, labels, decision)
            self.log(
                "val_action_accuracy",
                correct / decided,
                on_epoch=True,
                prog_bar=True,
                batch_size=decided,
                sync_dist=True,
            )
        return loss, torch.tensor(labels.numel())

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> dict[str, Tensor]:
        loss, labelled = self._shared_step(batch, "train")
        return {"loss": loss, "train_loss": loss.detach(), "labelled_tokens": labelled}

    def validation_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        loss, _ = self._shared_step(batch, "val")
        return loss

    # ------------------------------------------------------------------ optimisation

    def configure_optimizers(self) -> dict[str, Any]:
        trainable = [p for p in self.parameters() if p.requires_grad]
        if not trainable:
            raise RuntimeError("nothing to train")
        groups = [
            {
                "params": [p for p in trainable if p.ndim >= 2],
                "weight_decay": self.hparams.weight_decay,
            },
            {"params": [p for p in trainable if p.ndim < 2], "weight_decay": 0.0},
        ]
        groups = [g for g in groups if g["params"]]
        arguments = {"lr": self.hparams.lr, "betas": tuple(self.hparams.betas)}
        optimizer = None
        if self.hparams.fused and self._may_fuse():
            try:  # one kernel for every parameter (docs/sft.md, "Speed")
                optimizer = torch.optim.AdamW(groups, fused=True, **arguments)
            except (RuntimeError, ValueError):  # no fused AdamW for this device or dtype
                optimizer = None
        if optimizer is None:  # batched over parameters (faster than the default loop)
            optimizer = torch.optim.AdamW(groups, foreach=True, **arguments)
        # The step count is read lazily: asking Lightning for it here would build the training
        # dataloader before a resumed run restores the loader's position.
        schedule = warmup_cosine(
            self.hparams.warmup_steps,
            lambda: int(self.trainer.estimated_stepping_batches),
            self.hparams.min_lr_ratio,
        )
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": "step"},
        }

    def _may_fuse(self) -> bool:
        """Whether the trainer allows a fused optimizer: not under float16 loss scaling
        (the fused step would unscale, and clipping needs unscaled gradients first) nor
        under a sharding strategy (FSDP, DeepSpeed), which clips and steps its own way."""
        trainer = self._trainer
        if trainer is None:
            return True
        strategy = type(trainer.strategy).__name__.lower()
        sharded = "fsdp" in strategy or "deepspeed" in strategy
        return not sharded and trainer.precision != "16-mixed"

    def configure_gradient_clipping(
        self,
        optimizer: torch.optim.Optimizer,
        gradient_clip_val: float | None = None,
        gradient_clip_algorithm: str | None = None,
    ) -> None:
        """Lightning refuses to clip for a fused optimizer, in case it unscales float16
        gradients itself; with bfloat16 or float32 nothing is scaled (:meth:`_may_fuse`), so
        the gradients are clipped directly."""
        if not gradient_clip_val or not optimizer.defaults.get("fused"):
            super().configure_gradient_clipping(
                optimizer, gradient_clip_val, gradient_clip_algorithm
            )
            return
        params = [p for group in optimizer.param_groups for p in group["params"]]
        if gradient_clip_algorithm == "value":
            torch.nn.utils.clip_grad_value_(params, gradient_clip_val)
        else:
            torch.nn.utils.clip_grad_norm_(params, gradient_clip_val)

    # ------------------------------------------------------------------ checkpoints

    def _trainable_names(self) -> set[str]:
        return {name for name, p in self.named_parameters() if p.requires_grad}

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        keep = self._trainable_names()
        checkpoint["state_dict"] = {k: v for k, v in checkpoint["state_dict"].items() if k in keep}

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        missing = self._trainable_names() - set(checkpoint["state_dict"])
        if missing:
            raise ValueError(
                f"the checkpoint lacks {len(missing)} trainable parameters (e.g. "
                f"{sorted(missing)[0]}): it was written by another stage or configuration"
            )

    # ------------------------------------------------------------------ export

    @torch.no_grad()
    def export(self) -> Any:
        """The trained Hugging Face model: LoRA merged, persona rows written into the
        vocabulary, gradient checkpointing off, in eval mode. Call once, after training."""
        model = self.model.merge_and_unload() if self.hparams.backbone == "lora" else self.model
        if self._frozen_originals:
            for name, param in model.named_parameters():
                if name in self._frozen_originals:
                    param.data = self._frozen_originals[name].to(param.device)
            self._frozen_originals = {}
        span = slice(self.persona.first, self.persona.stop)
        if self.persona_rows is not None:
            model.get_input_embeddings().weight[span] = self.persona_rows
        if self.persona_output_rows is not None:
            model.get_output_embeddings().weight[span] = self.persona_output_rows
        if self.hparams.gradient_checkpointing:
            model.gradient_checkpointing_disable()
        model.requires_grad_(False)
        return model.eval()


class StepMetricHistory(pl.Callback):
    """Training loss (token-weighted mean since the last record) and learning rate every
    ``every_n_steps`` optimizer steps, and the validation loss, next-action accuracy and
    seconds since training started (``val_at_seconds``) after each validation, all
    keyed by optimizer step: ``{name: [{"step": s, "value": v}, ...]}``, the format of
    kedro-mlflow's ``MlflowMetricsHistoryDataset``."""

    def __init__(self, every_n_steps: int = 1) -> None:
        self.every_n_steps = max(1, int(every_n_steps))
        self.history: dict[str, list[dict[str, float]]] = {}
        self._loss_sum = 0.0
        self._tokens = 0
        self._last_step = 0
        self._started: float | None = None

    def _add(self, name: str, step: int, value: float) -> None:
        self.history.setdefault(name, []).append({"step": int(step), "value": float(value)})

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._last_step = trainer.global_step  # > 0 when resumed from a checkpoint
        self._started = time.perf_counter()

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, i: int
    ) -> None:
        tokens = int(outputs["labelled_tokens"])
        self._loss_sum += float(outputs["train_loss"]) * tokens
        self._tokens += tokens
        step = trainer.global_step
        if step == self._last_step:  # accumulating: no optimizer step yet
            return
        self._last_step = step
        if step % self.every_n_steps == 0:
            self._add("train_loss", step, self._loss_sum / self._tokens)
            self._add("lr", step, trainer.optimizers[0].param_groups[0]["lr"])
            self._loss_sum, self._tokens = 0.0, 0

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        for name in ("val_loss", "val_action_accuracy"):
            if name in trainer.callback_metrics:
                self._add(name, trainer.global_step, trainer.callback_metrics[name])
        if self._started is not None:  # validations during fit: the curve's time axis
            self._add("val_at_seconds", trainer.global_step, time.perf_counter() - self._started)
