"""Token sequences merged on their common starts, so candidates that start alike are fed once.

The local backend's ``choose`` feeds a prompt's candidates after it as one trie; see
docs/llm.md ("How it is fast").
"""

from __future__ import annotations

from collections.abc import Sequence

import torch


class TokenTrie:
    """Token sequences merged on their common starts: ``tokens[k]`` is node k's token,
    ``depths[k]`` its depth (0: first token), parents before children; ``paths[j]`` the nodes
    of sequence j, in order."""

    def __init__(self, sequences: Sequence[Sequence[int]]):
        self.tokens: list[int] = []
        self.depths: list[int] = []
        self.parents: list[int] = []
        self.paths: list[list[int]] = []
        children: dict[tuple[int, int], int] = {}
        for sequence in sequences:
            node, path = -1, []
            for token in sequence:
                key = (node, token)
                if key not in children:
                    children[key] = len(self.tokens)
                    self.tokens.append(token)
                    self.depths.append(len(path))
                    self.parents.append(node)
                node = children[key]
                path.append(node)
            self.paths.append(path)

    def ancestry(self) -> torch.Tensor:
        """(nodes, nodes) bool: row k is True at node k and its ancestors."""
        n = len(self.tokens)
        seen = torch.eye(n, dtype=torch.bool)
        for k, parent in enumerate(self.parents):
            if parent >= 0:
                seen[k] |= seen[parent]
        return seen
