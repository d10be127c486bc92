import random

import pytest
import torch

from persona_shoppers.sft.data import (
    IGNORE,
    MIN_SHARED_PREFIX,
    SFTDataModule,
    collate_rows,
    decision_chars,
    even_shares,
    length_grouped_batches,
    pack_rows,
    query_only,
    sample_split,
    shared_prefix_length,
    tokenize_example,
    tokenize_examples,
)

from ._traces import synthetic_traces


def _conversation(answer: str, user: str = "Buyer profile: <|persona_3|>\nGoal: shoes") -> list:
    return [
        {"role": "system", "content": "You shop."},
        {"role": "user", "content": user},
        {"role": "assistant", "content": answer},
    ]


def test_labels_are_the_assistant_answer_and_end_of_turn(persona_model):
    _, tokenizer, _ = persona_model
    answer = '{"action": "view", "product": "shop01-p0232", "reason": "It matches."}'
    example = tokenize_example(_conversation(answer), tokenizer)

    assert len(example.labels) == len(example.input_ids)
    targets = [label for label in example.labels if label != IGNORE]
    assert tokenizer.decode(targets) == answer + "<|im_end|>"
    labelled = [t for t, label in enumerate(example.labels) if label != IGNORE]
    # labels[t] is the token at t + 1, a contiguous span ending before the final newline
    assert labelled == list(range(labelled[0], labelled[-1] + 1))
    assert all(example.labels[t] == example.input_ids[t + 1] for t in labelled)
    assert labelled[-1] == len(example.input_ids) - 3 and example.labels[-1] == IGNORE
    prompt = tokenize_example(_conversation(answer, user="Something else entirely"), tokenizer)
    assert [x for x in prompt.labels if x != IGNORE] == targets


def test_query_examples_carry_the_loss_on_the_query_only(persona_model):
    _, tokenizer, _ = persona_model
    answer = '{"action": "search", "query": "red trail shoes", "reason": "Looking."}'
    full = tokenize_example(_conversation(answer), tokenizer)
    example = tokenize_example(query_only(_conversation(answer)), tokenizer)
    assert example.input_ids == full.input_ids
    targets = tokenizer.decode([label for label in example.labels if label != IGNORE])
    assert targets.startswith("red trail shoes") or targets.startswith(" red trail shoes")
    assert targets.endswith('", "reason": "Looking."}<|im_end|>')
    assert example.decision == 0  # the action type carries no loss
    with pytest.raises(ValueError, match="must end with a search answer"):
        query_only(_conversation('{"action": "end"}'))


@pytest.mark.parametrize(
    "answer, fixed",
    [
        ('{"action": "view", "product": "p1", "reason": "x"}', '{"action": "view"'),
        ('{"action": "view_cart", "reason": "x"}', '{"action": "view_cart"'),
        ('{"action": "add_to_cart", "product": "p1"}', '{"action": "add_to_cart"'),
    ],
)
def test_decision_tokens_are_those_that_fix_the_action_type(persona_model, answer, fixed):
    _, tokenizer, _ = persona_model
    assert answer[: decision_chars(answer)] == fixed
    example = tokenize_example(_conversation(answer), tokenizer)
    targets = [label for label in example.labels if label != IGNORE]
    decided = tokenizer.decode(targets[: example.decision])
    assert decided.startswith(fixed) and not tokenizer.decode(
        targets[: example.decision - 1]
    ).startswith(fixed)


@pytest.mark.parametrize("answer", ["end", '{"reason": "x", "action": "end"}', '{"act": 1}'])
def test_answers_without_a_leading_action_type_decide_nothing(persona_model, answer):
    _, tokenizer, _ = persona_model
    assert decision_chars(answer) == 0
    assert tokenize_example(_conversation(answer), tokenizer).decision == 0


def test_collate_numbers_the_decision_positions_of_each_example(persona_model):
    _, tokenizer, _ = persona_model
    answers = ['{"action": "view", "product": "p1"}', "no action", '{"action": "end"}']
    examples = [tokenize_example(_conversation(a), tokenizer) for a in answers]
    batch = collate_rows([[examples[0], examples[1]], [examples[2]]], tokenizer.pad_token_id)
    decision = batch["decision"]
    assert (decision[0] == 0).sum() == examples[0].decision
    assert not (decision == 1).any()  # the second example names no action
    assert (decision[1] == 2).sum() == examples[2].decision
    marked = decision >= 0
    assert bool((batch["labels"][marked] != IGNORE).all())


def test_example_must_end_with_the_assistant(persona_model):
    _, tokenizer, _ = persona_model
    with pytest.raises(ValueError, match="end with an assistant"):
        tokenize_example(_conversation("x")[:2], tokenizer)


def test_overlong_examples_are_dropped_or_truncated_and_counted(persona_model, caplog):
    _, tokenizer, _ = persona_model
    short, long = _conversation("ok"), _conversation("ok", user="word " * 300)
    kept, report = tokenize_examples([short, long, short], tokenizer, max_length=100)
    assert (report.kept, report.dropped_overlong, report.truncated) == (2, 1, 0)
    assert "1 longer than max_length 100 dropped, 0 truncated" in caplog.text

    kept, report = tokenize_examples([short, long], tokenizer, 100, overlong="truncate")
    assert (report.kept, report.dropped_overlong, report.truncated) == (2, 0, 1)
    full = tokenize_example(long, tokenizer)
    assert kept[1].input_ids == full.input_ids[-100:] and kept[1].labels == full.labels[-100:]

    kept, report = tokenize_examples([long], tokenizer, 2, overlong="truncate")
    assert report.dropped_unlabelled == 1 and not kept  # <|im_end|> and "\n": no target left


def test_collate_restarts_positions_per_example_and_padding_continues(persona_model):
    _, tokenizer, _ = persona_model
    a, b, c = (tokenize_example(_conversation(x * 3), tokenizer) for x in ("a", "bb b", "c"))
    batch = collate_rows([[a, b], [c]], pad_id=0)
    width = len(a) + len(b)
    assert batch["input_ids"].shape == (2, width)
    positions = batch["position_ids"]
    assert positions[0].tolist() == list(range(len(a))) + list(range(len(b)))
    assert positions[1].tolist() == list(range(width))  # one example: plain causal positions
    assert (batch["labels"][1, len(c) :] == IGNORE).all()
    assert batch["input_ids"][0, len(a) :].tolist() == b.input_ids


def test_pack_rows_fills_rows_within_capacity():
    rng = random.Random(0)
    lengths = [rng.randint(20, 300) for _ in range(200)]
    rows = pack_rows(lengths, 512, seed=1)
    assert sorted(i for row in rows for i in row) == list(range(200))
    assert all(sum(lengths[i] for i in row) <= 512 for row in rows)
    assert len(rows) <= 1.15 * sum(lengths) / 512 + 1
    with pytest.raises(ValueError, match="exceeds pack_length"):
        pack_rows([600], 512, seed=0)


def test_length_grouping_reduces_padding():
    rng = random.Random(0)
    lengths = [rng.randint(50, 800) for _ in range(800)]

    def padding(batches):
        return sum(
            max(lengths[i] for i in b) * len(b) - sum(lengths[i] for i in b) for b in batches
        )

    grouped = length_grouped_batches(lengths, 8, seed=0)
    order = list(range(800))
    rng.shuffle(order)
    plain = [order[i : i + 8] for i in range(0, 800, 8)]
    assert sorted(i for b in grouped for i in b) == list(range(800))
    assert padding(grouped) < 0.1 * padding(plain)


def test_datamodule_batches_every_example_once_and_reshuffles_by_epoch(persona_model, traces):
    _, tokenizer, _ = persona_model
    data = SFTDataModule(tokenizer, traces, traces[:4], batch_size=5, seed=3)
    data.setup("fit")
    loader = data.train_dataloader()
    loader.sampler.set_epoch(0)
    first = [b["input_ids"][:, :60].sum().item() for b in loader]
    loader.sampler.set_epoch(1)
    second = [b["input_ids"][:, :60].sum().item() for b in loader]
    assert len(first) == 5 and sorted(first) == sorted(second) and first != second
    rows = sum(b["input_ids"].shape[0] for b in loader)
    assert rows == len(traces) and data.reports["train"].kept == len(traces)
    assert len(list(data.val_dataloader())) == 1
    assert 0 <= data.padding_share() < 0.2


def test_sample_split_is_seeded_and_bounded():
    frame = synthetic_traces(sessions=20, steps=3)
    a = sample_split(frame, "train", 10, seed=1)
    assert len(a) == 10 and (a["split"] == "train").all()
    assert a.index.equals(sample_split(frame, "train", 10, seed=1).index)
    assert not a.index.equals(sample_split(frame, "train", 10, seed=2).index)
    assert (
        len(sample_split(frame, "validation", None, seed=0)) == (frame.split == "validation").sum()
    )


def test_even_shares_fills_small_groups_and_spreads_the_rest():
    assert even_shares({"a": 10, "b": 10, "c": 10}, 9) == {"a": 3, "b": 3, "c": 3}
    # c has 1 row: it gives all of it, a and b share the other 9 (a first gets the odd one)
    assert even_shares({"a": 10, "b": 10, "c": 1}, 10) == {"a": 5, "b": 4, "c": 1}
    assert even_shares({"a": 2, "b": 0}, 5) == {"a": 2, "b": 0}


def test_even_shares_follows_weights_and_passes_on_what_a_full_group_cannot_take():
    # quotas 30 * 2/7, 30 * 4/7, 30 * 1/7 = 8.57, 17.14, 4.29 -> 9, 17, 4 by largest remainder;
    # b holds 2: its other 15 go to a and c 2:1 (a fills at 10, c takes the rest)
    assert even_shares({"a": 10, "b": 2, "c": 100}, 30, {"a": 2, "b": 4}) == {
        "a": 10,
        "b": 2,
        "c": 18,
    }
    assert even_shares({"a": 100, "b": 100}, 9, {"a": 2}) == {"a": 6, "b": 3}
    assert even_shares({"a": 10, "b": 10}, 8, {"a": 1.0, "b": 1.0}) == even_shares(
        {"a": 10, "b": 10}, 8
    )
    with pytest.raises(ValueError, match="does not have: \\['z'\\]"):
        even_shares({"a": 1}, 1, {"z": 2})
    with pytest.raises(ValueError, match="must be positive"):
        even_shares({"a": 1}, 1, {"a": 0})


def test_sample_split_by_page_draws_even_shares():
    frame = synthetic_traces(sessions=40, steps=5)
    # 5 in 6 training rows on product pages, the rest on checkout pages
    frame["page"] = ["checkout" if i % 6 == 0 else "product" for i in range(len(frame))]
    picked = sample_split(frame, "train", 20, seed=3, stratify_by="page")
    assert picked["page"].value_counts().to_dict() == {"checkout": 10, "product": 10}
    assert picked.index.is_monotonic_increasing and (picked["split"] == "train").all()
    assert picked.index.equals(sample_split(frame, "train", 20, seed=3, stratify_by="page").index)
    with pytest.raises(ValueError, match="no column 'shelf'"):
        sample_split(frame, "train", 20, seed=3, stratify_by="shelf")
    weighted = sample_split(frame, "train", 20, seed=3, stratify_by="page", weights={"checkout": 3})
    assert weighted["page"].value_counts().to_dict() == {"checkout": 15, "product": 5}
    unused = sample_split(frame, "train", 20, seed=3, stratify_by="page", weights={"cart": 3})
    assert unused.index.equals(picked.index)  # no cart rows: the weight goes unused (a warning)
    with pytest.raises(ValueError, match="stratify_by is null"):
        sample_split(frame, "train", 20, seed=3, weights={"checkout": 3})


def test_collate_matches_examples_tensor_types(persona_model):
    _, tokenizer, _ = persona_model
    example = tokenize_example(_conversation("x"), tokenizer)
    batch = collate_rows([[example]], pad_id=0)
    assert all(t.dtype == torch.long for t in batch.values())


def test_shared_prefix_is_the_common_start_before_any_label(persona_model):
    _, tokenizer, _ = persona_model
    system = "You shop carefully and answer with one JSON object. " * 4
    a, b, c = (
        tokenize_example(
            [
                {"role": "system", "content": system},
                {"role": "user", "content": f"Goal: {x}"},
                {"role": "assistant", "content": x},
            ],
            tokenizer,
        )
        for x in ("shoes", "a hat", "red socks for the winter")
    )
    common = 0
    while a.input_ids[common] == b.input_ids[common] == c.input_ids[common]:
        common += 1
    assert common >= MIN_SHARED_PREFIX
    assert shared_prefix_length([[a], [b], [c]]) == common
    assert shared_prefix_length([[a, b], [c]]) == common  # packed rows: every example counts
    batch = collate_rows([[a], [b], [c]], pad_id=0, flatten=True, share_prefix=True)
    assert int(batch["shared_prefix"]) == common
    assert batch["lengths"].tolist() == [len(a), len(b), len(c)]
    assert (batch["labels"][:, :common] == IGNORE).all()  # no labelled position is shared
    assert int(collate_rows([[a], [b]], pad_id=0, flatten=True)["shared_prefix"]) == 0
    assert "lengths" not in collate_rows([[a], [b]], pad_id=0)  # padded rows only
    # a single example, or too short a common start: nothing is shared
    assert shared_prefix_length([[a]]) == 0
    short = tokenize_example(_conversation("x"), tokenizer)
    assert shared_prefix_length([[a], [short]]) == 0
    # never the whole of a row, never past the first labelled position
    assert shared_prefix_length([[a], [a]]) == next(
        t for t, label in enumerate(a.labels) if label != IGNORE
    )


def test_datamodule_batches_carry_lengths_and_the_shared_prefix(persona_model, traces):
    _, tokenizer, _ = persona_model
    for share, packing in ((True, False), (False, False), (True, True)):
        data = SFTDataModule(
            tokenizer, traces, batch_size=4, share_prefix=share, packing=packing, seed=0
        )
        data.setup("fit")
        batches = list(data.train_dataloader())
        prefixes = [int(b["shared_prefix"]) for b in batches]
        assert all(p > MIN_SHARED_PREFIX for p in prefixes) if share else not any(prefixes)
        assert all(b["lengths"].max() == b["input_ids"].shape[1] for b in batches)
        assert len(data.batches("train")) == len(batches)
    data = SFTDataModule(tokenizer, traces, batch_size=4, flatten=False, seed=0)
    data.setup("fit")
    assert all("lengths" not in b for b in data.train_dataloader())
