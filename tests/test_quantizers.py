import math

import pytest
import torch

from dfqvit.errors import BitsError
from dfqvit.quant.config import QuantConfig
from dfqvit.quant.quantizers import LogQuantizer, UniformQuantizer


def _calibrated(q, x):
    q.mode = "observe"
    q(x)
    q.freeze()
    return q


@pytest.mark.parametrize("bits", [2, 4, 8])
def test_uniform_error_is_at_most_half_a_step_inside_the_range(bits):
    x = torch.randn(10000) * 3
    q = _calibrated(UniformQuantizer(bits, "minmax"), x)
    err = (q(x) - x).abs()
    assert err.max().item() <= q.scale.item() / 2 + 1e-5


def test_per_channel_beats_per_tensor_on_a_skewed_weight():
    w = torch.randn(16, 64) * torch.logspace(-2, 1, 16)[:, None]  # channel ranges differ by 1000×
    per_tensor = _calibrated(UniformQuantizer(4, "minmax"), w)
    per_channel = _calibrated(UniformQuantizer(4, "minmax", channel_axis=0, shape=tuple(w.shape)), w)
    power = w.pow(2).mean(dim=1)  # relative error per channel: small channels matter as much as big ones
    e_t = ((per_tensor(w) - w).pow(2).mean(dim=1) / power).mean()
    e_c = ((per_channel(w) - w).pow(2).mean(dim=1) / power).mean()
    assert e_c < 0.1 * e_t


def test_log2_quantizer_keeps_softmax_rows_within_half_an_octave():
    row = torch.softmax(torch.randn(4, 197, generator=torch.Generator().manual_seed(0)) * 3, dim=-1)
    q = _calibrated(LogQuantizer(4, "2"), row)
    out = q(row)
    smallest = q.scale * 2.0 ** -(2**4 - 2)
    kept = row >= smallest * math.sqrt(2)
    ratio = out[kept] / row[kept]
    assert ratio.min() >= 2**-0.5 - 1e-6 and ratio.max() <= 2**0.5 + 1e-6
    assert (out[row < smallest / 2**0.5] == 0).all()  # below the grid maps to the zero code
    # a 4-bit log2 grid keeps small probabilities a uniform 4-bit grid zeroes
    uni = _calibrated(UniformQuantizer(4, "minmax"), row)
    assert (out - row).abs().sum() < (uni(row) - row).abs().sum()


def test_mse_and_percentile_observers_clip_outliers():
    x = torch.cat([torch.randn(100000), torch.tensor([80.0])])
    mm = _calibrated(UniformQuantizer(4, "minmax"), x)
    for kind in ("mse", "percentile"):
        q = _calibrated(UniformQuantizer(4, kind), x)
        assert q.scale.item() < mm.scale.item()
        assert (q(x) - x)[:-1].pow(2).mean() < (mm(x) - x)[:-1].pow(2).mean()


@pytest.mark.parametrize("field,value", [("w_bits", 1), ("a_bits", 9), ("w_bits", 0), ("head_bits", 16), ("a_bits", 4.5)])
def test_bits_outside_2_to_8_raise(field, value):
    with pytest.raises(BitsError, match="2..8"):
        QuantConfig(**{field: value})
