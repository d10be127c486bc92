import copy
import math

import lightning.pytorch as pl
import pytest
import torch
import torch.nn.functional as F
from lightning.pytorch.callbacks import ModelCheckpoint

from persona_shoppers.sft import attention
from persona_shoppers.sft.data import IGNORE, SFTDataModule, collate_rows, tokenize_examples
from persona_shoppers.sft.module import PersonaSFTModule, action_accuracy, warmup_cosine
from persona_shoppers.sft.tokens import add_persona_tokens, is_tied
from persona_shoppers.sft.training import train_stage

from .conftest import tiny_llama

QUICK = {"batch_size": 4, "max_length": 512}


def _trainer(**overrides):
    return {
        "accelerator": "cpu",
        "max_epochs": 1,
        "enable_progress_bar": False,
        "num_sanity_val_steps": 0,
        **overrides,
    }


def _snapshot(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _train(model, tokenizer, persona, traces, backbone, **kwargs):
    return train_stage(
        model,
        tokenizer,
        persona,
        traces,
        traces[:4],
        backbone=backbone,
        optimizer={"lr": 1e-2, "weight_decay": 0.1, "warmup_steps": 1},
        data=QUICK,
        trainer=_trainer(**kwargs.pop("trainer", {})),
        seed=0,
        **kwargs,
    )


# ------------------------------------------------------------------ the loss


def test_loss_is_the_full_logit_loss_at_labelled_positions(persona_model, traces):
    model, tokenizer, persona = persona_model
    module = PersonaSFTModule(model, persona.first, persona.count, backbone="frozen")
    examples, _ = tokenize_examples(traces[:3], tokenizer, 512)
    batch = collate_rows([[e] for e in examples], tokenizer.pad_token_id)
    loss, labelled = module.loss(batch)

    logits = model(input_ids=batch["input_ids"], position_ids=batch["position_ids"]).logits
    labels = batch["labels"]
    naive = F.cross_entropy(logits.flatten(0, 1), labels.flatten(), ignore_index=IGNORE)
    assert loss.item() == pytest.approx(naive.item(), rel=1e-5)
    assert labelled == (labels != IGNORE).sum()


def test_masked_targets_do_not_change_the_loss(persona_model, traces):
    model, tokenizer, persona = persona_model
    module = PersonaSFTModule(model, persona.first, persona.count, backbone="full")
    example = tokenize_examples(traces[:1], tokenizer, 512)[0][0]
    batch = collate_rows([[example]], tokenizer.pad_token_id)
    loss = module.loss(batch)[0]

    # the final "\n" after <|im_end|> is a target of no labelled position
    changed = copy.deepcopy(batch)
    changed["input_ids"][0, -1] = 1234
    assert torch.equal(module.loss(changed)[0], loss)
    # a token inside the answer is a labelled target: the loss moves
    first = int((batch["labels"][0] != IGNORE).nonzero()[0])
    changed = copy.deepcopy(batch)
    changed["input_ids"][0, first + 1] = 1234
    changed["labels"][0, first] = 1234
    assert not torch.isclose(module.loss(changed)[0], loss)


def test_packed_batch_loss_equals_the_examples_unpadded(persona_model, traces):
    model, tokenizer, persona = persona_model
    module = PersonaSFTModule(model, persona.first, persona.count, backbone="full")
    examples, _ = tokenize_examples(traces[:5], tokenizer, 512)
    total = count = 0.0
    for example in examples:  # one by one, no padding
        loss, n = module.loss(collate_rows([[example]], tokenizer.pad_token_id))
        total, count = total + loss.item() * n.item(), count + n.item()
    expected = total / count

    packed = collate_rows([examples[:2], examples[2:]], tokenizer.pad_token_id)
    padded = collate_rows([[e] for e in examples], tokenizer.pad_token_id)
    assert module.loss(packed)[0].item() == pytest.approx(expected, rel=1e-5)
    assert module.loss(padded)[0].item() == pytest.approx(expected, rel=1e-5)
    leaking = dict(packed, position_ids=torch.arange(packed["input_ids"].shape[1]).expand(2, -1))
    assert module.loss(leaking)[0].item() != pytest.approx(expected, rel=1e-3)


# ------------------------------------------------------------------ what trains


def test_stage1_changes_only_the_persona_rows(persona_model, traces):
    model, tokenizer, persona = persona_model
    before = _snapshot(model)
    trained, history = _train(
        model, tokenizer, persona, traces, "frozen", trainer={"precision": "bf16-mixed"}
    )
    after = trained.state_dict()
    new_rows = slice(persona.first, persona.stop)
    for name, value in after.items():
        if name in ("model.embed_tokens.weight", "lm_head.weight"):
            assert torch.equal(value[: persona.first], before[name][: persona.first]), name
            assert not torch.equal(value[new_rows], before[name][new_rows]), name
        else:
            assert torch.equal(value, before[name]), name
    assert is_tied(trained)
    assert len(history["train_loss"]) == 6 and history["val_loss"]


def test_stage1_trains_untied_output_rows_and_nothing_else(base_tokenizer, traces):
    tokenizer = copy.deepcopy(base_tokenizer)
    model = tiny_llama(tokenizer, tied=False)
    persona = add_persona_tokens(model, tokenizer, 16)
    before = _snapshot(model)
    trained, _ = _train(model, tokenizer, persona, traces, "frozen")
    after = trained.state_dict()
    for name in ("model.embed_tokens.weight", "lm_head.weight"):
        assert torch.equal(after[name][: persona.first], before[name][: persona.first])
        assert not torch.equal(after[name][persona.first :], before[name][persona.first :])
    others = [k for k in after if k not in ("model.embed_tokens.weight", "lm_head.weight")]
    assert all(torch.equal(after[k], before[k]) for k in others)
    assert not is_tied(trained)


def test_full_training_changes_every_parameter_and_keeps_ties(persona_model, traces):
    model, tokenizer, persona = persona_model
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    trained, _ = _train(model, tokenizer, persona, traces, "full")
    for name, value in trained.named_parameters():
        assert not torch.equal(value, before[name]), name
    assert is_tied(trained)
    assert not any(p.requires_grad for p in trained.parameters())


def test_top_training_changes_only_the_upper_layers_and_the_final_norm(persona_model, traces):
    model, tokenizer, persona = persona_model
    before = _snapshot(model)
    trained, _ = _train(model, tokenizer, persona, traces, "top", top_layers=1)
    upper = f"model.layers.{len(trained.model.layers) - 1}."
    for name, value in trained.state_dict().items():
        trains = name.startswith(upper) or name == "model.norm.weight"
        assert torch.equal(value, before[name]) != trains, name
    assert is_tied(trained)


@pytest.mark.parametrize("flatten", [False, True])
def test_top_training_reuses_the_frozen_layers_output_exactly(persona_model, traces, flatten):
    model, tokenizer, persona = persona_model
    examples, _ = tokenize_examples(traces[:4], tokenizer, 512)
    batch = collate_rows([[e] for e in examples], tokenizer.pad_token_id, flatten, flatten)
    full = PersonaSFTModule(copy.deepcopy(model), persona.first, persona.count, "full")
    top = PersonaSFTModule(model, persona.first, persona.count, "top", top_layers=1)
    runs = []
    lower = top.causal_lm.model.layers[0]
    lower.register_forward_hook(lambda *args: runs.append(1))
    expected = full.loss(batch)[0]
    fresh = top.loss(batch, cache_key=("train", 0))[0]
    fresh.backward()
    grad = top.causal_lm.model.norm.weight.grad.clone()
    top.zero_grad()
    cached = top.loss(batch, cache_key=("train", 0))[0]
    cached.backward()
    assert len(runs) == 1  # the frozen layer ran once
    assert fresh.item() == pytest.approx(expected.item(), rel=1e-5)
    assert cached.item() == fresh.item()
    assert torch.equal(top.causal_lm.model.norm.weight.grad, grad)
    assert top.causal_lm.model.layers[0].self_attn.q_proj.weight.grad is None
    assert len(top.causal_lm.model.layers) == 2  # the decoder is whole again


def test_action_accuracy_counts_examples_right_at_every_deciding_position():
    logits = torch.tensor([[0.0, 1.0], [1.0, 0.0], [0.0, 1.0], [1.0, 0.0], [0.0, 1.0]])
    labels = torch.tensor([1, 0, 1, 1, 0])  # argmax right, right, right, wrong, wrong
    decision = torch.tensor([0, 0, 2, 2, -1])  # example 0 right, example 2 wrong, 1 absent
    assert action_accuracy(logits, labels, decision) == (1, 2)


def test_validation_records_action_accuracy_and_early_stopping_ends_training(persona_model, traces):
    model, tokenizer, persona = persona_model
    _, history = _train(
        model,
        tokenizer,
        persona,
        traces,
        "top",
        top_layers=1,
        trainer={"max_epochs": 5},
        early_stopping={
            "monitor": "val_action_accuracy",
            "mode": "max",
            "min_delta": 2.0,
            "patience": 1,
        },
    )
    accuracy = history["val_action_accuracy"]
    assert all(0 <= p["value"] <= 1 for p in accuracy)
    # no validation can improve by 2: the first sets the best, the second stops the fit
    assert [p["step"] for p in accuracy] == [6, 12]


def test_a_validation_interval_longer_than_an_epoch_validates_once_per_epoch(
    persona_model, traces, caplog
):
    """Few examples (a small log) make fewer batches than val_check_interval."""
    model, tokenizer, persona = persona_model
    with caplog.at_level("WARNING"):
        _, history = _train(
            model,
            tokenizer,
            persona,
            traces,
            "top",
            top_layers=1,
            trainer={"max_epochs": 2, "val_check_interval": 50},
        )
    assert "val_check_interval 50 is more than the 6 training batches" in caplog.text
    assert [p["step"] for p in history["val_loss"]] == [6, 12]


@pytest.mark.parametrize("top_layers", [None, 0, 3])
def test_top_training_needs_a_layer_count_within_the_decoder(persona_model, top_layers):
    model, _, persona = persona_model  # the tiny Llama has 2 layers
    with pytest.raises(ValueError, match="top_layers must be an integer in 1..2"):
        PersonaSFTModule(model, persona.first, persona.count, "top", top_layers=top_layers)


def test_lora_exports_a_plain_model_with_merged_adapters(persona_model, traces):
    model, tokenizer, persona = persona_model
    before = _snapshot(model)
    lora = {"r": 4, "lora_alpha": 8, "target_modules": ["q_proj", "v_proj"]}
    trained, _ = _train(model, tokenizer, persona, traces, "lora", lora=lora)
    after = trained.state_dict()
    assert set(after) == set(before) and type(trained).__name__ == "LlamaForCausalLM"
    assert not torch.equal(
        after["model.layers.0.self_attn.q_proj.weight"],
        before["model.layers.0.self_attn.q_proj.weight"],
    )
    assert torch.equal(
        after["model.layers.0.mlp.up_proj.weight"], before["model.layers.0.mlp.up_proj.weight"]
    )
    embed = "model.embed_tokens.weight"
    assert torch.equal(after[embed][: persona.first], before[embed][: persona.first])
    assert not torch.equal(after[embed][persona.first :], before[embed][persona.first :])
    assert is_tied(trained)


# ------------------------------------------------------------------ schedule and history


def test_warmup_cosine_schedule():
    factor = warmup_cosine(2, lambda: 10, min_lr_ratio=0.1)
    assert [factor(0), factor(1), factor(2)] == [0.5, 1.0, 1.0]
    assert factor(6) == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi / 2)))
    assert factor(10) == pytest.approx(0.1) and factor(12) == pytest.approx(0.1)


def test_history_has_one_point_per_optimizer_step(persona_model, traces):
    model, tokenizer, persona = persona_model
    _, history = _train(
        model, tokenizer, persona, traces, "frozen", trainer={"accumulate_grad_batches": 2}
    )
    assert [p["step"] for p in history["train_loss"]] == [1, 2, 3]
    assert [p["step"] for p in history["val_loss"]] == [3]
    assert history["train_kept"] == [{"step": 0, "value": 24.0}]
    lrs = [p["value"] for p in history["lr"]]
    assert lrs[0] == pytest.approx(1e-2) and lrs[-1] == pytest.approx(0.0, abs=1e-9)


# ------------------------------------------------------------------ checkpoints


class _Crash(pl.Callback):
    def __init__(self, at_step: int) -> None:
        self.at_step = at_step

    def on_train_batch_end(self, trainer, *args) -> None:
        if trainer.global_step == self.at_step:
            raise RuntimeError("simulated crash")


@pytest.mark.parametrize("backbone", ["frozen", "full"])
def test_resuming_mid_epoch_matches_an_uninterrupted_run(persona_model, traces, tmp_path, backbone):
    model, tokenizer, persona = persona_model

    def fit(folder, crash_at=None, ckpt_path=None):
        pl.seed_everything(0)
        module = PersonaSFTModule(
            copy.deepcopy(model),
            persona.first,
            persona.count,
            backbone,
            lr=1e-2,
            weight_decay=0.1,
            warmup_steps=1,
        )
        data = SFTDataModule(tokenizer, traces, batch_size=4, seed=0)
        callbacks = [ModelCheckpoint(folder, every_n_train_steps=1, save_last="link")]
        if crash_at:
            callbacks.append(_Crash(crash_at))
        trainer = pl.Trainer(
            **_trainer(max_epochs=2, max_steps=9),
            callbacks=callbacks,
            logger=False,
            enable_model_summary=False,
        )
        trainer.fit(module, datamodule=data, ckpt_path=ckpt_path)
        return module, trainer

    straight, _ = fit(tmp_path / "a")
    with pytest.raises(RuntimeError, match="simulated crash"):
        fit(tmp_path / "b", crash_at=4)  # epochs of 6 batches: the crash is mid-epoch
    resumed, trainer = fit(tmp_path / "b", ckpt_path=str(tmp_path / "b" / "last.ckpt"))
    assert trainer.global_step == 9
    for (name, a), b in zip(straight.named_parameters(), resumed.parameters(), strict=True):
        assert torch.equal(a, b), name


def test_stage1_checkpoints_hold_only_the_persona_rows(persona_model, traces, tmp_path):
    model, tokenizer, persona = persona_model
    _train(
        model,
        tokenizer,
        persona,
        traces,
        "frozen",
        checkpoint_dir=tmp_path / "ck",
        checkpoint_every_n_steps=2,
    )
    checkpoint = torch.load(tmp_path / "ck" / "last.ckpt", weights_only=False)
    assert list(checkpoint["state_dict"]) == ["persona_rows"]
    assert checkpoint["global_step"] == 6


# ------------------------------------------------------------------ speed levers, same numbers


def _grads(module):
    return {n: p.grad.clone() for n, p in module.named_parameters() if p.grad is not None}


LAYOUTS = {
    "flat": lambda ex: ([[e] for e in ex], False),
    "flat_shared_prefix": lambda ex: ([[e] for e in ex], True),
    "packed_flat_shared_prefix": lambda ex: ([ex[:2], ex[2:]], True),
}


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
@pytest.mark.parametrize("backbone", ["frozen", "full", "lora"])
@pytest.mark.parametrize("kernel", ["matmul", "flash"])
def test_flattened_batches_give_the_loss_and_gradients_of_padded_rows(
    persona_model, traces, backbone, layout, kernel, monkeypatch
):
    # the examples' backward: batched matmuls (short examples) or the flash kernel (long)
    monkeypatch.setattr(attention, "MATMUL_BACKWARD_PAIRS", 10**9 if kernel == "matmul" else 0)
    model, tokenizer, persona = persona_model
    lora = {"r": 4, "lora_alpha": 8, "lora_dropout": 0.0, "target_modules": ["q_proj", "v_proj"]}
    module = PersonaSFTModule(model, persona.first, persona.count, backbone=backbone, lora=lora)
    examples, _ = tokenize_examples(traces[:5], tokenizer, 512)
    padded = collate_rows([[e] for e in examples], tokenizer.pad_token_id)
    rows, share = LAYOUTS[layout](examples)
    flat = collate_rows(rows, tokenizer.pad_token_id, flatten=True, share_prefix=share)
    assert (int(flat["shared_prefix"]) > 16) == share

    loss, labelled = module.loss(padded)
    loss.backward()
    expected = _grads(module)
    module.zero_grad(set_to_none=True)
    flat_loss, flat_labelled = module.loss(flat)
    flat_loss.backward()
    got = _grads(module)
    assert flat_loss.item() == pytest.approx(loss.item(), rel=1e-5)
    assert flat_labelled == labelled
    assert set(got) == set(expected) and got
    for name, grad in expected.items():
        torch.testing.assert_close(got[name], grad, rtol=1e-4, atol=1e-6, msg=name)


def test_flattened_batches_under_bf16_autocast(persona_model, traces):
    model, tokenizer, persona = persona_model
    module = PersonaSFTModule(model, persona.first, persona.count, backbone="full")
    examples, _ = tokenize_examples(traces[:5], tokenizer, 512)
    padded = collate_rows([[e] for e in examples], tokenizer.pad_token_id)
    flat = collate_rows([[e] for e in examples], tokenizer.pad_token_id, True, True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        losses = [module.loss(batch)[0] for batch in (padded, flat)]
    losses[1].backward()
    assert losses[1].item() == pytest.approx(losses[0].item(), rel=1e-2)
    assert all(torch.isfinite(p.grad).all() for p in module.parameters())


def test_gradient_checkpointing_trains_padded_rows(persona_model, traces, caplog):
    model, tokenizer, persona = persona_model
    examples, _ = tokenize_examples(traces[:4], tokenizer, 512)
    batch = collate_rows([[e] for e in examples], tokenizer.pad_token_id, True, True)
    plain = PersonaSFTModule(copy.deepcopy(model), persona.first, persona.count, "full")
    checkpointed = PersonaSFTModule(
        model, persona.first, persona.count, "full", gradient_checkpointing=True
    )
    assert checkpointed._flat_inputs(batch) is None  # with gradients: padded rows
    loss = checkpointed.loss(batch)[0]
    loss.backward()
    assert loss.item() == pytest.approx(plain.loss(batch)[0].item(), rel=1e-5)
    with torch.no_grad():  # validation: no recomputation, flattened
        assert checkpointed._flat_inputs(batch) is not None
        assert checkpointed.loss(batch)[0].item() == pytest.approx(loss.item(), rel=1e-5)


def test_flattening_falls_back_to_padded_rows_where_it_cannot_run(persona_model, traces, caplog):
    model, tokenizer, persona = persona_model
    model.config.sliding_window = 64
    module = PersonaSFTModule(model, persona.first, persona.count, "full")
    examples, _ = tokenize_examples(traces[:3], tokenizer, 512)
    batch = collate_rows([[e] for e in examples], tokenizer.pad_token_id, True, True)
    assert module._flat_inputs(batch) is None
    assert "sliding-window" in caplog.text
    assert torch.isfinite(module.loss(batch)[0])


def _per_example_losses(module, batch):
    """Cross-entropy of each example (rows may pack several; positions restart per example)."""
    hidden = module(batch["input_ids"], batch["position_ids"])
    labels = batch["labels"]
    starts = (batch["position_ids"] == 0).long().cumsum(-1)  # example index within the row
    example = starts + starts.amax(-1, keepdim=True).cumsum(0) - starts.amax(-1, keepdim=True)
    labelled = labels != IGNORE
    token_losses = F.cross_entropy(
        module._logits(hidden[labelled]), labels[labelled], reduction="none"
    )
    ids = example[labelled]
    return [token_losses[ids == i].mean().item() for i in ids.unique().tolist()]


def test_packed_rows_give_each_example_its_unpacked_loss_in_bf16(persona_model, traces):
    model, tokenizer, persona = persona_model
    module = PersonaSFTModule(model, persona.first, persona.count, backbone="full")
    examples, _ = tokenize_examples(traces[:6], tokenizer, 512)
    packed = collate_rows([examples[:2], examples[2:5], examples[5:]], tokenizer.pad_token_id)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        alone = [
            _per_example_losses(module, collate_rows([[e]], tokenizer.pad_token_id))[0]
            for e in examples
        ]
        together = _per_example_losses(module, packed)
        padded = _per_example_losses(
            module, collate_rows([[e] for e in examples], tokenizer.pad_token_id)
        )
    assert together == pytest.approx(alone, rel=2e-2)
    assert padded == pytest.approx(alone, rel=2e-2)


def test_stage1_with_bf16_frozen_weights_exports_the_float32_weights_bit_identical(
    persona_model, traces
):
    model, tokenizer, persona = persona_model
    before = _snapshot(model)
    for precision in ("bf16-mixed", "32-true"):
        trained, history = _train(
            model,
            tokenizer,
            persona,
            traces,
            "frozen",
            frozen_dtype="bfloat16",
            trainer={"precision": precision, "gradient_clip_val": 1.0},
        )
        assert all(v.dtype == torch.float32 for v in trained.state_dict().values())
        new_rows = slice(persona.first, persona.stop)
        for name, value in trained.state_dict().items():
            if name in ("model.embed_tokens.weight", "lm_head.weight"):
                assert torch.equal(value[: persona.first], before[name][: persona.first])
                assert not torch.equal(value[new_rows], before[name][new_rows]), precision
            else:
                assert torch.equal(value, before[name]), name
        assert is_tied(trained)
        assert math.isfinite(history["val_loss"][-1]["value"])
        model = trained.train()


def test_bf16_frozen_weights_are_for_the_frozen_backbone_only(persona_model):
    model, _, persona = persona_model
    module = PersonaSFTModule(
        model, persona.first, persona.count, "frozen", frozen_dtype="bfloat16"
    )
    assert module.persona_rows.dtype == torch.float32
    assert model.model.layers[0].mlp.up_proj.weight.dtype == torch.bfloat16
    with pytest.raises(ValueError, match="frozen_dtype"):
        PersonaSFTModule(model, persona.first, persona.count, "full", frozen_dtype="bfloat16")


def test_fused_adamw_and_clipping(persona_model, traces):
    model, tokenizer, persona = persona_model
    module = PersonaSFTModule(model, persona.first, persona.count, "full", lr=1e-3)
    optimizer = module.configure_optimizers()["optimizer"]
    assert optimizer.defaults["fused"]
    for p in module.parameters():
        p.grad = torch.full_like(p, 3.0)
    module.configure_gradient_clipping(optimizer, 1.0, "norm")
    norm = torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in module.parameters()]))
    assert norm.item() == pytest.approx(1.0, rel=1e-2)  # from 3 x sqrt(1.6M)
    slow = PersonaSFTModule(model, persona.first, persona.count, "full", fused=False)
    assert not slow.configure_optimizers()["optimizer"].defaults["fused"]
    # a Lightning run with bf16, clipping and the fused step (Lightning alone refuses this)
    trained, history = _train(
        model,
        tokenizer,
        persona,
        traces,
        "full",
        trainer={"precision": "bf16-mixed", "gradient_clip_val": 1.0},
    )
    assert len(history["train_loss"]) == 6
