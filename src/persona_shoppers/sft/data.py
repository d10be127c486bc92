"""SFT examples: chat messages -> token ids with assistant-only labels, batches (length-grouped
or packed; padded rows or one flattened row) and a DataModule whose batch order survives a
resume.

See docs/sft.md, "Input: the traces" and "Batches and attention".
"""

from __future__ import annotations

import json
import logging
import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import lightning.pytorch as pl
import pandas as pd
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from persona_shoppers.agent.rollout import SEARCH_PREFIX, type_text

logger = logging.getLogger(__name__)

IGNORE = -100
LOSS_FROM = "loss_from"  # an assistant message's key: its first characters carry no loss
OVERLONG_POLICIES = ("drop", "truncate")


@dataclass(frozen=True)
class Example:
    """One tokenised example: ids and shifted labels (``IGNORE`` where unlabelled);
    ``decision``: how many of the first labelled positions predict the answer's action type
    (:func:`decision_chars`), 0 where the answer names none."""

    input_ids: list[int]
    labels: list[int]
    decision: int = 0

    def __len__(self) -> int:
        return len(self.input_ids)


@dataclass
class TokenizeReport:
    """What tokenisation did with the examples it was given."""

    examples: int = 0
    kept: int = 0
    truncated: int = 0
    dropped_overlong: int = 0
    dropped_unlabelled: int = 0
    tokens: int = 0
    labelled_tokens: int = 0

    def as_dict(self) -> dict[str, int]:
        return dict(self.__dict__)


def _label_span(messages: Sequence[dict], tokenizer: Any) -> tuple[str, int, int]:
    """The rendered text and the character span of the assistant answer + end of turn."""
    if not messages or messages[-1]["role"] != "assistant":
        raise ValueError("an SFT example must end with an assistant message")
    text = tokenizer.apply_chat_template(list(messages), tokenize=False)
    prompt = tokenizer.apply_chat_template(
        list(messages[:-1]), tokenize=False, add_generation_prompt=True
    )
    if not text.startswith(prompt):
        raise ValueError(
            "the chat template renders the conversation without the assistant turn differently "
            "from its start; assistant tokens cannot be located"
        )
    return text, len(prompt), len(text.rstrip())


def decision_chars(answer: str) -> int:
    """The characters of an agent's answer that fix its action type: ``{"action": "<type>"``
    up to the closing quote (the start :func:`~persona_shoppers.agent.rollout.type_text` the
    agent is scored on), or 0 for an answer that does not start so."""
    try:
        action = json.loads(answer)["action"]
    except (ValueError, TypeError, KeyError):
        return 0
    start = type_text(str(action))
    return len(start) - 1 if answer.startswith(start) else 0


def query_only(messages: Sequence[dict]) -> list[dict]:
    """A search step trained on its query only: the answer's start up to the query
    (:data:`~persona_shoppers.agent.rollout.SEARCH_PREFIX`, which fixes the action type)
    carries no loss (``LOSS_FROM``), so extra query examples leave the action mix alone."""
    answer = messages[-1]
    if answer.get("role") != "assistant" or not answer["content"].startswith(SEARCH_PREFIX):
        raise ValueError(
            f"a query example must end with a search answer starting {SEARCH_PREFIX!r}, got "
            f"{answer.get('content', '')[:60]!r}"
        )
    return [*messages[:-1], {**answer, LOSS_FROM: len(SEARCH_PREFIX)}]


def tokenize_example(messages: Sequence[dict], tokenizer: Any) -> Example:
    """Token ids of ``messages`` rendered by the chat template, labels on the final assistant
    turn's content (from its ``LOSS_FROM`` character, 0 by default) and end-of-turn token."""
    text, start, stop = _label_span(messages, tokenizer)
    encoded = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    ids = list(encoded["input_ids"])
    begins = [begin for begin, _ in encoded["offset_mapping"]]
    first = start + int(messages[-1].get(LOSS_FROM, 0))
    labelled = [first <= begin < stop for begin in begins]
    labels = [ids[t + 1] if labelled[t + 1] else IGNORE for t in range(len(ids) - 1)]
    decided = start + decision_chars(messages[-1]["content"])
    decision = sum(first <= begin < decided for begin in begins)
    return Example(input_ids=ids, labels=[*labels, IGNORE], decision=decision)


def tokenize_examples(
    conversations: Sequence[Sequence[dict]],
    tokenizer: Any,
    max_length: int,
    overlong: str = "drop",
) -> tuple[list[Example], TokenizeReport]:
    """Tokenise conversations; longer than ``max_length``: ``drop`` them, or ``truncate`` (keep
    the last ``max_length`` tokens, where the answer is). Examples left without a labelled
    token are dropped too. Every drop and truncation is counted in the report and logged."""
    if overlong not in OVERLONG_POLICIES:
        raise ValueError(f"overlong must be one of {OVERLONG_POLICIES}, got {overlong!r}")
    report = TokenizeReport(examples=len(conversations))
    out = []
    for messages in conversations:
        example = tokenize_example(messages, tokenizer)
        if len(example) > max_length:
            if overlong == "drop":
                report.dropped_overlong += 1
                continue
            report.truncated += 1
            example = Example(
                example.input_ids[-max_length:], example.labels[-max_length:], example.decision
            )
        labelled = sum(label != IGNORE for label in example.labels)
        if not labelled:
            report.dropped_unlabelled += 1
            continue
        out.append(example)
        report.tokens += len(example)
        report.labelled_tokens += labelled
    report.kept = len(out)
    if report.dropped_overlong or report.truncated or report.dropped_unlabelled:
        logger.warning(
            "SFT examples: %d longer than max_length %d dropped, %d truncated; "
            "%d without assistant tokens dropped (of %d)",
            report.dropped_overlong,
            max_length,
            report.truncated,
            report.dropped_unlabelled,
            report.examples,
        )
    return out, report


MIN_SHARED_PREFIX = 16  # shorter common prefixes are not worth a separate forward pass


def shared_prefix_length(rows: Sequence[Sequence[Example]]) -> int:
    """Tokens every example of a batch (rows of one or more examples) starts with, which a
    flattened batch computes once: at most up to the first labelled position of any example
    (a labelled position needs its own hidden state) and one token short of the shortest
    example (each keeps a token of its own); 0 for a single example or when under
    ``MIN_SHARED_PREFIX``."""
    examples = [e for row in rows for e in row]
    if len(examples) < 2:
        return 0
    limit = min(len(e) for e in examples) - 1
    for e in examples:
        labelled = (t for t, label in enumerate(e.labels) if label != IGNORE)
        limit = min(limit, next(labelled, limit))
    first = examples[0].input_ids
    length = 0
    while length < limit and all(e.input_ids[length] == first[length] for e in examples):
        length += 1
    return length if length >= MIN_SHARED_PREFIX else 0


def collate_rows(
    rows: Sequence[Sequence[Example]],
    pad_id: int,
    flatten: bool = False,
    share_prefix: bool = False,
) -> dict[str, torch.Tensor]:
    """Right-padded tensors of rows, each row one or more examples back to back, with
    position ids restarting at 0 per example (the padding continues the last one's). With
    ``flatten`` also ``lengths``, each row's real length (the module then runs the batch as
    one padding-free row), and ``shared_prefix`` (0-d: :func:`shared_prefix_length` with
    ``share_prefix``, else 0). ``decision`` marks the positions that predict each example's
    action type with the example's number in the batch (-1 elsewhere)."""
    width = max(sum(len(e) for e in row) for row in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    labels = torch.full((len(rows), width), IGNORE, dtype=torch.long)
    positions = torch.zeros((len(rows), width), dtype=torch.long)
    decision = torch.full((len(rows), width), -1, dtype=torch.long)
    number = 0
    for r, row in enumerate(rows):
        at = 0
        for example in row:
            n = len(example)
            ids[r, at : at + n] = torch.tensor(example.input_ids)
            labels[r, at : at + n] = torch.tensor(example.labels)
            positions[r, at : at + n] = torch.arange(n)
            if example.decision:
                labelled = (labels[r, at : at + n] != IGNORE).nonzero()[: example.decision, 0]
                decision[r, at + labelled] = number
            number += 1
            at += n
        last = len(row[-1])
        positions[r, at:] = torch.arange(last, last + width - at)
    batch = {"input_ids": ids, "labels": labels, "position_ids": positions, "decision": decision}
    if flatten:
        batch["lengths"] = torch.tensor([sum(len(e) for e in row) for row in rows])
        shared = shared_prefix_length(rows) if share_prefix else 0
        batch["shared_prefix"] = torch.tensor(shared, dtype=torch.long)
    return batch


def length_grouped_batches(
    lengths: Sequence[int], batch_size: int, seed: int, group_size: int = 50
) -> list[list[int]]:
    """Batches of indices of similar length: a seeded shuffle cut into groups of
    ``group_size`` batches, each sorted by length, then cut into batches."""
    order = list(range(len(lengths)))
    random.Random(seed).shuffle(order)
    span = batch_size * group_size
    batches = []
    for start in range(0, len(order), span):
        group = sorted(order[start : start + span], key=lambda i: lengths[i])
        batches += [group[i : i + batch_size] for i in range(0, len(group), batch_size)]
    return batches


def pack_rows(lengths: Sequence[int], pack_length: int, seed: int) -> list[list[int]]:
    """Indices placed first-fit (in a seeded order) into rows of at most ``pack_length``."""
    order = list(range(len(lengths)))
    random.Random(seed).shuffle(order)
    rows: list[list[int]] = []
    free: list[int] = []
    for i in order:
        if lengths[i] > pack_length:
            raise ValueError(f"an example of {lengths[i]} tokens exceeds pack_length {pack_length}")
        slot = next((r for r, room in enumerate(free) if room >= lengths[i]), None)
        if slot is None:
            rows.append([])
            free.append(pack_length)
            slot = len(rows) - 1
        rows[slot].append(i)
        free[slot] -= lengths[i]
    return rows


class BatchDataset(Dataset):
    """A fixed list of batches (each a list of rows of examples); item i is batch i collated,
    with its number ``batch_index`` (a key for what the module caches per batch)."""

    def __init__(
        self,
        batches: list[list[list[Example]]],
        pad_id: int,
        flatten: bool = False,
        share_prefix: bool = False,
    ) -> None:
        self.batches = batches
        self.pad_id = pad_id
        self.flatten = flatten
        self.share_prefix = share_prefix

    def __len__(self) -> int:
        return len(self.batches)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        batch = collate_rows(self.batches[index], self.pad_id, self.flatten, self.share_prefix)
        return {**batch, "batch_index": torch.tensor(index)}


class EpochShuffleSampler(Sampler[int]):
    """A permutation of ``range(n)`` drawn from ``seed`` and the epoch (``set_epoch``, which
    Lightning calls before each epoch)."""

    def __init__(self, n: int, seed: int) -> None:
        self.n, self.seed, self.epoch = n, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[int]:
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        return iter(torch.randperm(self.n, generator=generator).tolist())

    def __len__(self) -> int:
        return self.n


class ResumableLoader(DataLoader):
    """A DataLoader of whole batches whose position within the epoch goes into Lightning
    checkpoints (``state_dict`` / ``load_state_dict``): a run resumed mid-epoch skips the
    batches it already trained on, so it sees the batches an uninterrupted run would."""

    def __init__(self, dataset: Dataset, sampler: Sampler | None = None, **kwargs: Any) -> None:
        # kwargs: DataLoader arguments (Lightning re-creates the loader with a distributed
        # sampler under DDP); each dataset item is already a batch.
        kwargs.setdefault("batch_size", None)
        super().__init__(dataset, sampler=sampler, **kwargs)
        self._served = 0  # batches of the current epoch handed out (skipped ones included)
        self._resume: dict[str, int] | None = None

    def _epoch(self) -> int:
        return int(getattr(self.sampler, "epoch", 0))

    def __iter__(self) -> Iterator[Any]:
        skip = 0
        if self._resume is not None and self._resume["epoch"] == self._epoch():
            skip = self._resume["batches"]
        self._resume = None
        self._served = 0
        for batch in super().__iter__():
            self._served += 1
            if self._served > skip:
                yield batch

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self._epoch(), "batches": self._served}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self._resume = dict(state)


class SFTDataModule(pl.LightningDataModule):
    """Training and validation examples (chat message lists) -> batches.

    Tokenisation happens in :meth:`setup` (once); ``reports`` then holds what it kept,
    truncated and dropped per split.
    """

    def __init__(
        self,
        tokenizer: Any,
        train_conversations: Sequence[Sequence[dict]],
        val_conversations: Sequence[Sequence[dict]] = (),
        max_length: int = 1024,
        overlong: str = "drop",
        batch_size: int = 8,
        packing: bool = False,
        pack_length: int | None = None,
        group_size: int = 50,
        flatten: bool = True,
        share_prefix: bool = True,
        seed: int = 0,
        num_workers: int = 0,
    ) -> None:
        super().__init__()
        if batch_size < 1:
            raise ValueError("batch_size must be >= 1")
        if pack_length is not None and pack_length < max_length:
            raise ValueError("pack_length must be at least max_length")
        self.tokenizer = tokenizer
        self.train_conversations = train_conversations
        self.val_conversations = val_conversations
        self.max_length = max_length
        self.overlong = overlong
        self.batch_size = batch_size
        self.packing = packing
        self.pack_length = pack_length
        self.group_size = group_size
        self.flatten = flatten
        self.share_prefix = share_prefix
        self.seed = seed
        self.num_workers = num_workers
        self.reports: dict[str, TokenizeReport] = {}
        self._batches: dict[str, list[list[list[Example]]]] = {}

    @property
    def pad_id(self) -> int:
        pad = self.tokenizer.pad_token_id
        return int(pad if pad is not None else self.tokenizer.eos_token_id)

    def _batch(self, examples: list[Example]) -> list[list[list[Example]]]:
        lengths = [len(e) for e in examples]
        if self.packing:
            rows = pack_rows(lengths, self.pack_length or self.max_length, self.seed)
        else:
            rows = [[i] for i in range(len(examples))]
        row_lengths = [sum(lengths[i] for i in row) for row in rows]
        batches = length_grouped_batches(row_lengths, self.batch_size, self.seed, self.group_size)
        return [[[examples[i] for i in rows[r]] for r in batch] for batch in batches]

    def setup(self, stage: str | None = None) -> None:
        for split, conversations in (
            ("train", self.train_conversations),
            ("val", self.val_conversations),
        ):
            if split in self._batches:
                continue
            examples, report = tokenize_examples(
                conversations, self.tokenizer, self.max_length, self.overlong
            )
            self.reports[split] = report
            self._batches[split] = self._batch(examples) if examples else []
            logger.info(
                "%s: %d examples, %d tokens (%d labelled) in %d batches",
                split,
                report.kept,
                report.tokens,
                report.labelled_tokens,
                len(self._batches[split]),
            )
        if not self._batches["train"]:
            raise ValueError("no SFT training examples left after tokenisation")

    def batches(self, split: str = "train") -> list[list[list[Example]]]:
        """The split's batches (each a list of rows, a row a list of examples), in their
        fixed order (the loader reshuffles them per epoch); after :meth:`setup`."""
        return self._batches[split]

    def padding_share(self, split: str = "train") -> float:
        """Padded positions / all positions over the split's batches."""
        real = padded = 0
        for batch in self._batches[split]:
            lengths = [sum(len(e) for e in row) for row in batch]
            real += sum(lengths)
            padded += max(lengths) * len(lengths)
        return 1 - real / padded if padded else 0.0

    def _loader(self, split: str, shuffle: bool) -> DataLoader:
        dataset = BatchDataset(self._batches[split], self.pad_id, self.flatten, self.share_prefix)
        return ResumableLoader(
            dataset,
            sampler=EpochShuffleSampler(len(dataset), self.seed) if shuffle else None,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader | list:
        return self._loader("val", shuffle=False) if self._batches.get("val") else []


def conversations(frame: pd.DataFrame) -> list[list[dict]]:
    """The ``messages`` column as plain lists of ``{"role", "content"}`` dicts."""
    if "messages" not in frame.columns:
        raise ValueError(f"SFT traces need a 'messages' column, got {list(frame.columns)}")
    return [
        [{"role": m["role"], "content": m["content"]} for m in row] for row in frame["messages"]
    ]


def sample_split(
    frame: pd.DataFrame,
    split: str,
    max_examples: int | None,
    seed: int,
    stratify_by: str | None = None,
    weights: dict[Any, float] | None = None,
) -> pd.DataFrame:
    """Rows of ``split`` ("train" / "validation"), at most ``max_examples`` of them drawn with
    ``seed`` (kept in their original order).

    ``stratify_by`` (a column, e.g. ``page``) draws the same number of rows from each of its
    values (all rows of a value with fewer, the rest spread over the others): a small budget
    then covers rare situations (the checkout page) while the distribution of everything
    else within a value, such as the next action on a kind of page, is kept. ``weights``
    (value -> relative share, 1 where absent) draws more of some values than others."""
    if "split" not in frame.columns:
        raise ValueError("SFT traces need a 'split' column ('train' / 'validation')")
    if stratify_by is not None and stratify_by not in frame.columns:
        raise ValueError(
            f"SFT traces have no column {stratify_by!r} to stratify by; rerun "
            "trace_generation or set the stage's stratify_by to null"
        )
    if weights and stratify_by is None:
        raise ValueError("sampling weights need a column to stratify by (stratify_by is null)")
    rows = frame[frame["split"] == split]
    if max_examples is None or len(rows) <= max_examples:
        return rows
    if stratify_by is None:
        return rows.sample(n=int(max_examples), random_state=seed).sort_index()
    groups = dict(list(rows.groupby(stratify_by, sort=True)))
    absent = sorted(map(str, set(weights or {}) - set(groups)))
    if absent:
        logger.warning(
            "no %s rows with %s %s: their sampling weights go unused", split, stratify_by, absent
        )
    weights = {k: w for k, w in (weights or {}).items() if k in groups}
    shares = even_shares({k: len(g) for k, g in groups.items()}, int(max_examples), weights)
    picked = [g.sample(n=shares[k], random_state=seed) for k, g in groups.items()]
    return pd.concat(picked).sort_index()


def even_shares(
    sizes: dict[Any, int], total: int, weights: dict[Any, float] | None = None
) -> dict[Any, int]:
    """``total`` split over groups of ``sizes`` rows in proportion to ``weights`` (1 for a
    group not named; equal shares without weights), no group given more than it has: what a
    full group cannot take goes to the others in proportion. Rounding goes by largest
    remainder, ties to the first groups (in order)."""
    weights = weights or {}
    unknown = sorted(map(str, set(weights) - set(sizes)))
    if unknown:
        raise ValueError(f"sampling weights name values the data does not have: {unknown}")
    if any(float(w) <= 0 for w in weights.values()):
        raise ValueError(f"sampling weights must be positive, got {weights}")
    shares = dict.fromkeys(sizes, 0)
    left = min(total, sum(sizes.values()))
    open_groups = [k for k in sizes if sizes[k] > 0]
    while left > 0:
        weight = {k: float(weights.get(k, 1.0)) for k in open_groups}
        total_weight = sum(weight.values())
        quota = {k: left * w / total_weight for k, w in weight.items()}
        give = {k: int(q) for k, q in quota.items()}
        by_remainder = sorted(open_groups, key=lambda k: give[k] - quota[k])  # stable: in order
        for key in by_remainder[: left - sum(give.values())]:
            give[key] += 1
        for key in open_groups:
            taken = min(give[key], sizes[key] - shares[key])
            shares[key] += taken
            left -= taken
        open_groups = [k for k in open_groups if shares[k] < sizes[k]]
    return shares
