import timm
import torch

from dfqvit.api import evaluate, observable_copy, quantize
from dfqvit.models import find_blocks
from dfqvit.quant.config import QuantConfig
from dfqvit.quant.wrap import QuantizedViT


def test_embedded_default_is_trained(tiny):
    assert evaluate(tiny.model, tiny, progress=False)["top1"] > 95.0


def test_observable_attention_computes_what_timm_computes(tiny):
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(observable_copy(tiny.model)(x), tiny.model(x), atol=1e-5)


def test_swin_observable_and_quantized_with_acm():
    torch.manual_seed(0)
    swin = timm.create_model("swin_tiny_patch4_window7_224", pretrained=False, img_size=64, window_size=4,
                             embed_dim=24, depths=(2, 2), num_heads=(2, 4), num_classes=10).eval()
    x = torch.randn(6, 3, 64, 64)
    with torch.no_grad():
        assert torch.allclose(observable_copy(swin)(x), swin(x), atol=1e-4)
    from dfqvit.models.loading import LoadedModel

    loaded = LoadedModel(swin, "custom", {"input_size": (3, 64, 64), "mean": (0.5,) * 3, "std": (0.5,) * 3})
    q, info = quantize(loaded, x, QuantConfig(w_bits=4, a_bits=8), acm_every=1, progress=False)
    assert len(q.blocks) == 4 and info["acm_blocks"] == [0, 1, 2, 3]
    assert sum(info["block_gap_after_acm"]) < sum(info["block_gap_before_acm"])
    assert torch.isfinite(q(x)).all()


def test_wrapping_leaves_the_float_model_untouched(tiny):
    before = {k: v.clone() for k, v in tiny.model.state_dict().items()}
    QuantizedViT(tiny.model, QuantConfig())
    assert not find_blocks(tiny.model)[0][1].__class__.__name__.startswith("Corrected")
    assert all(torch.equal(before[k], v) for k, v in tiny.model.state_dict().items())
    assert type(tiny.model.blocks[0].attn).__name__ == "Attention"
