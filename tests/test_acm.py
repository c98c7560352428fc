import torch

from dfqvit.api import observable_copy, quantize, synthesize
from dfqvit.correction.acm import block_gap, compute_acm, corrected_indices
from dfqvit.models import find_blocks
from dfqvit.quant.config import QuantConfig
from dfqvit.synthesis import SynthesisOptions


def test_corrected_indices_every_gamma():
    assert corrected_indices(12, 1) == list(range(12))
    assert corrected_indices(12, 3) == [2, 5, 8, 11]
    assert corrected_indices(12, 0) == []


def test_acm_reduces_the_block_gap_on_held_out_synthetic_images_at_w4a8(tiny):
    syn = synthesize(tiny, "dfq-vit", SynthesisOptions(num_images=48, batch_size=48, iterations=40, seed=1), progress=False)
    calib, held_out = syn.images[:32], syn.images[32:]
    q, info = quantize(tiny, calib, QuantConfig(w_bits=4, a_bits=8), acm_every=0, progress=False)
    fp = observable_copy(tiny.model)
    fp_blocks = [b for _, b in find_blocks(fp)]
    before = block_gap(fp_blocks, fp, q.blocks, q, held_out)
    chosen = compute_acm(fp, fp_blocks, q, q.blocks, calib, every=1)
    after = block_gap(fp_blocks, fp, q.blocks, q, held_out)
    assert chosen == [0, 1, 2, 3]
    assert sum(after) < sum(before)
    # γ = 2 corrects only blocks 1 and 3
    q2, info2 = quantize(tiny, calib, QuantConfig(w_bits=4, a_bits=8), acm_every=2, progress=False)
    assert [b.correction.numel() > 0 for b in q2.blocks] == [False, True, False, True]
