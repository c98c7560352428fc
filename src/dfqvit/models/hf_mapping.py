"""What the transformers adapters share: renaming a checkpoint onto timm keys, and the label count.

Each family (hf_vit, hf_swin) gives its rename rules (regex → replacement, or a function of the
match where the key needs arithmetic), the pattern of its separate query/key/value projections
(a named group `part`) with the timm key they stack into, and the keys that map to nothing.
"""
from __future__ import annotations

import re
from typing import Any, Callable

import torch


def map_checkpoint(state: dict[str, torch.Tensor], renames: list[tuple[str, str | Callable[[re.Match], str]]], qkv: re.Pattern, qkv_target: str,
                   unused: re.Pattern) -> tuple[dict[str, torch.Tensor], list[str]]:
    """(timm state dict, checkpoint keys that map to nothing). query/key/value tensors matching
    `qkv` are stacked in that order under `qkv.expand(qkv_target)`; a projection missing one of
    the three is reported, not stacked."""
    out: dict[str, torch.Tensor] = {}
    stacks: dict[str, dict[str, torch.Tensor]] = {}
    left = []
    for key, value in state.items():
        m = qkv.fullmatch(key)
        if m:
            stacks.setdefault(m.expand(qkv_target), {})[m.group("part")] = value
            continue
        if unused.match(key):
            continue
        for pattern, target in renames:
            if re.fullmatch(pattern, key):
                out[re.sub(pattern, target, key)] = value
                break
        else:
            left.append(key)
    for target, parts in stacks.items():
        if set(parts) != {"query", "key", "value"}:
            left.append(f"{target}: only {sorted(parts)} of query/key/value")
            continue
        out[target] = torch.cat([parts["query"], parts["key"], parts["value"]])
    return out, left


def num_labels(config: dict[str, Any]) -> int:
    labels = config.get("id2label")
    return len(labels) if isinstance(labels, dict) and labels else int(config.get("num_labels", 2))
