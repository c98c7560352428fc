import pytest
import torch

from dfqvit.api import observable_copy, quantize, synthesize
from dfqvit.correction.acm import ACM_VARIANTS, block_gap, compute_acm, corrected_indices
from dfqvit.models import find_blocks
from dfqvit.quant.config import QuantConfig
from dfqvit.synthesis import SynthesisOptions


def test_corrected_indices_every_gamma():
    assert corrected_indices(12, 1) == list(range(12))
    assert corrected_indices(12, 3) == [2, 5, 8, 11]
    assert corrected_indices(12, 0) == []


@pytest.fixture(scope="module")
def w2a8_on_synthetic(tiny):
    """W2A8: a quantization error that is a large mean shift, which is what ACM corrects
    (at W4A8 the tiny default's block gap is already small and mostly rounding noise)."""
    syn = synthesize(tiny, "dfq-vit", SynthesisOptions(num_images=64, batch_size=64, iterations=40, seed=1),
                     progress=False)
    calib, held_out = syn.images[:32], syn.images[32:]
    q, _ = quantize(tiny, calib, QuantConfig(w_bits=2, a_bits=8, weight_observer="minmax"), acm_every=0,
                    progress=False)
    fp = observable_copy(tiny.model)
    return q, fp, [b for _, b in find_blocks(fp)], calib, held_out


@pytest.mark.parametrize("variant", list(ACM_VARIANTS))
def test_each_acm_variant_reduces_the_block_gap_on_held_out_images(w2a8_on_synthetic, variant):
    q, fp, fp_blocks, calib, held_out = w2a8_on_synthetic
    for b in q.blocks:
        b.correction = torch.zeros(0)
    before = block_gap(fp_blocks, fp, q.blocks, q, held_out)
    chosen = compute_acm(fp, fp_blocks, q, q.blocks, calib, every=1, variant=variant)
    after = block_gap(fp_blocks, fp, q.blocks, q, held_out)
    assert chosen == [0, 1, 2, 3]
    assert sum(after) < 0.95 * sum(before)


def test_acm_every_gamma_corrects_only_those_blocks(tiny):
    calib = torch.randn(8, 3, 32, 32)
    q2, info2 = quantize(tiny, calib, QuantConfig(w_bits=4, a_bits=8), acm_every=2, progress=False)
    assert [b.correction.numel() > 0 for b in q2.blocks] == [False, True, False, True]
    assert info2["acm_blocks"] == [1, 3]


def test_channel_variant_is_one_vector_per_block_and_agree_zeroes_disputed_entries():
    from dfqvit.correction.acm import _agree, _channel

    stats = {"n": 4, "sum": torch.tensor([[4.0, -8.0], [0.0, 4.0]]), "sum_a": torch.tensor([[2.0, -2.0]]),
             "sum_b": torch.tensor([[2.0, 2.0]]), "n_a": 2, "n_b": 2}
    assert torch.equal(_channel(stats), torch.tensor([[0.5, -0.5]]))
    assert torch.equal(_agree(stats), torch.tensor([[1.0, 0.0]]))
