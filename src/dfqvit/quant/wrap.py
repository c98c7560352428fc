"""Turn a float ViT into a fake-quantized one without touching the original."""
from __future__ import annotations

import copy
from typing import Iterator

import torch
import torch.nn as nn

from ..correction.acm import CorrectedBlock
from ..models.attention import attention_modules, find_blocks, make_observable
from .config import QuantConfig
from .modules import QuantConv2d, QuantLinear, _QuantWeighted
from .quantizers import GELU_QUANTIZERS, QUANTIZER_TYPES, SOFTMAX_QUANTIZERS, UniformQuantizer
from .relu_mlp import swap_gelu_for_relu


def _role(name: str, classifier: str, first_conv: str) -> str:
    if name == classifier or name.startswith(classifier + "."):
        return "head"
    if name == first_conv:
        return "embed"
    if name.endswith("mlp.fc2"):
        return "post_gelu"
    return "body"


def _input_quantizer(role: str, bits: int, c: QuantConfig) -> nn.Module:
    if role == "post_gelu":
        return GELU_QUANTIZERS[c.gelu_quantizer](bits, observer=c.act_observer, percentile=c.percentile)
    return UniformQuantizer(bits, c.act_observer, percentile=c.percentile)


# Linear layers of timm's blocks whose input is a temporary nobody reads again (LayerNorm,
# GELU and attention outputs): their input quantizers may round in place during inference.
TEMPORARY_INPUTS = ("attn.inner.qkv", "attn.inner.proj", "mlp.fc1", "mlp.fc2")


class QuantizedViT(nn.Module):
    """A deep copy of the float model with every Linear, the patch-embedding conv, the
    attention matmul inputs and the softmax output behind fake quantizers, and every
    block able to carry an activation correction."""

    def __init__(self, float_model: nn.Module, config: QuantConfig) -> None:
        super().__init__()
        self.config = config
        model = make_observable(copy.deepcopy(float_model)).eval()
        if config.mlp_activation == "relu":  # its fc1/fc2 are fitted to the GELU MLPs by api.quantize
            swap_gelu_for_relu(model)
        cfg = getattr(float_model, "pretrained_cfg", {}) or {}
        classifier = cfg.get("classifier", "head") or "head"
        first_conv = cfg.get("first_conv", "patch_embed.proj") or "patch_embed.proj"
        c = config
        for name, module in list(model.named_modules()):
            for child_name, child in list(module.named_children()):
                full = f"{name}.{child_name}" if name else child_name
                role = _role(full, classifier, first_conv)
                bits = {"head": (c.head_bits, c.head_bits), "embed": (c.embed_bits, c.embed_bits)}.get(
                    role, (c.w_bits, c.a_bits))
                wrapper = QuantLinear if isinstance(child, nn.Linear) else \
                    QuantConv2d if isinstance(child, nn.Conv2d) and role == "embed" else None
                if wrapper is not None:
                    setattr(module, child_name, wrapper(child, bits[0], _input_quantizer(role, bits[1], c),
                                                        c.weight_observer, c.percentile))
        for attn in attention_modules(model):
            for point in ("q_point", "k_point", "v_point"):
                setattr(attn, point, UniformQuantizer(c.a_bits, c.act_observer, percentile=c.percentile))
            attn.probs_point = SOFTMAX_QUANTIZERS[c.softmax_quantizer](c.softmax_bits or c.a_bits, observer="minmax")
            for point in ("q_point", "k_point", "v_point", "probs_point"):  # our own code: temporaries
                getattr(attn, point).inplace = True
        for name, m in model.named_modules():
            if isinstance(m, QuantLinear) and name.endswith(TEMPORARY_INPUTS):
                m.input_quantizer.inplace = True
        for name, block in find_blocks(model):
            parent_name, _, child_name = name.rpartition(".")
            parent = model.get_submodule(parent_name) if parent_name else model
            setattr(parent, child_name, CorrectedBlock(block))
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)

    @property
    def blocks(self) -> list[CorrectedBlock]:
        return [m for m in self.model.modules() if isinstance(m, CorrectedBlock)]

    def quantizers(self) -> Iterator[nn.Module]:
        return (m for m in self.modules() if isinstance(m, QUANTIZER_TYPES))

    def weighted_layers(self) -> Iterator[_QuantWeighted]:
        return (m for m in self.modules() if isinstance(m, _QuantWeighted))

    def set_mode(self, mode: str) -> None:
        for q in self.quantizers():
            q.mode = mode

    def weight_bits_total(self) -> int:
        """Bits of a packed deployment: quantized weights at their width, every other tensor
        (biases, norms, embeddings, scales, zero points, ACM) at its own dtype's width."""
        quantized = {id(m.inner.weight) for m in self.weighted_layers()}
        total = sum(m.inner.weight.numel() * m.weight_quantizer.bits for m in self.weighted_layers())
        seen: set[int] = set()
        for t in list(self.parameters()) + list(self.buffers()):
            if id(t) in quantized or id(t) in seen:
                continue
            seen.add(id(t))
            total += t.numel() * t.element_size() * 8
        return total


def quantize_model(float_model: nn.Module, config: QuantConfig) -> QuantizedViT:
    return QuantizedViT(float_model, config)
