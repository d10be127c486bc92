"""Prompt KV caches kept across calls of the local backend, least recently used dropped first.

``LocalLLM.prefill`` runs prefixes and keeps them here; later inputs starting with one run only
the rest. See docs/llm.md ("How it is fast").
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

import torch

Tokens = tuple[int, ...]


class PrefixCache:
    """Token prefix -> (each layer's (keys, values) over the prefix, its last hidden state)."""

    def __init__(self) -> None:
        self.entries: OrderedDict[Tokens, Any] = OrderedDict()
        self.bytes = 0

    def __len__(self) -> int:
        return len(self.entries)

    def __contains__(self, seq: Tokens) -> bool:
        return seq in self.entries

    def __getitem__(self, seq: Tokens) -> Any:
        return self.entries[seq]

    def keep(
        self, seq: Tokens, past: Any, row: int, where: torch.Tensor, last: torch.Tensor
    ) -> None:
        """Cache ``seq``: the KV of ``row`` at positions ``where`` and its last hidden state."""
        layers = [
            (layer.keys[row][:, where].clone(), layer.values[row][:, where].clone())
            for layer in past.layers
        ]
        self.entries[seq] = (layers, last.clone())
        self.bytes += _size(layers)

    def drop(self, seq: Tokens) -> None:
        entry = self.entries.pop(seq, None)
        if entry is not None:
            self.bytes -= _size(entry[0])

    def trim(self, limit_bytes: float) -> None:
        """Drop the least recently used entries until the cache holds at most ``limit_bytes``."""
        while self.entries and self.bytes > limit_bytes:
            self.drop(next(iter(self.entries)))

    def lookup(self, seq: Sequence[int]) -> Tokens | None:
        """The longest cached prefix of ``seq`` (marked as just used), or None."""
        best = None
        for key in self.entries:
            longer = best is None or len(key) > len(best)
            if longer and len(key) <= len(seq) and tuple(seq[: len(key)]) == key:
                best = key
        if best is not None:
            self.entries.move_to_end(best)
        return best

    def uncached_lengths(self, seqs: Sequence[Sequence[int]]) -> list[int]:
        """The tokens of each input a forward pass would run: those after its cached prefix."""
        if not self.entries:
            return [len(s) for s in seqs]
        return [len(s) - len(self.lookup(s) or ()) for s in seqs]

    def plan(
        self, prefixes: Sequence[Tokens]
    ) -> tuple[list[Tokens], dict[Tokens, list[Tokens]], dict[Tokens, int]]:
        """How to run the new ``prefixes``: the ones to run, the shorter ones cut from each
        one's pass (an agent's prompt up to its page and its whole prompt: one pass, not two),
        and the uncached tokens of each."""
        todo = list(dict.fromkeys(prefixes))
        todo = sorted(seq for seq in todo if seq and seq not in self.entries)
        # Sorted, a sequence comes right before the first of those it starts.
        outer = {a: b for a, b in zip(todo, todo[1:], strict=False) if b[: len(a)] == a}
        for seq in reversed(todo):  # longest chains first: map each prefix to its outermost
            if outer.get(seq) in outer:
                outer[seq] = outer[outer[seq]]
        uncached = dict(zip(todo, self.uncached_lengths(todo), strict=True))
        parts: dict[Tokens, list[Tokens]] = {}
        for part, whole in outer.items():
            if len(part) > len(whole) - uncached[whole]:  # its end is run in that pass
                parts.setdefault(whole, []).append(part)
        covered = {part for group in parts.values() for part in group}
        run = [seq for seq in todo if seq not in covered]
        return run, parts, uncached


def _size(layers: Sequence[tuple[torch.Tensor, torch.Tensor]]) -> int:
    return sum(k.numel() * k.element_size() * 2 for k, _ in layers)
