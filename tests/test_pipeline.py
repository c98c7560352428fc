import torch

from dfqvit.api import evaluate, load_quantized, quantize, real_images, save_quantized
from dfqvit.quant.config import QuantConfig


def _logit_mse(q, fp, x):
    with torch.no_grad():
        return (q(x) - fp(x)).pow(2).mean().item()


def test_w8a8_real_calibration_within_one_point_and_w4a4_worse(tiny, digits_heldout):
    images, _ = real_images(tiny, None, 32)
    fp_top1 = evaluate(tiny.model, tiny, progress=False)["top1"]
    q8, _ = quantize(tiny, images, QuantConfig(w_bits=8, a_bits=8), progress=False)
    q4, _ = quantize(tiny, images, QuantConfig(w_bits=4, a_bits=4), progress=False)
    r8 = evaluate(q8, tiny, fp_model=tiny.model, progress=False)
    r4 = evaluate(q4, tiny, fp_model=tiny.model, progress=False)
    assert r8["top1"] >= fp_top1 - 1.0
    x = digits_heldout[0]
    assert _logit_mse(q4, tiny.model, x) > 3 * _logit_mse(q8, tiny.model, x)
    assert r4["agreement_top1"] <= r8["agreement_top1"]


def test_save_then_load_gives_identical_logits(tiny, digits_heldout, tmp_path):
    images, _ = real_images(tiny, None, 16)
    q, _ = quantize(tiny, images, QuantConfig(w_bits=4, a_bits=6, weight_observer="mse"), acm_every=2, progress=False)
    path = save_quantized(q, tiny, tmp_path / "q.safetensors")
    q2, loaded, meta = load_quantized(path)
    x = digits_heldout[0][:64]
    with torch.no_grad():
        assert torch.equal(q(x), q2(x))
    assert meta["quant_config"]["w_bits"] == 4 and loaded.name == tiny.name
    assert any(b.correction.numel() for b in q2.blocks)


def test_cli_run_writes_report_model_and_grid(tmp_path):
    from dfqvit.cli import main

    out = tmp_path / "out"
    assert main(["run", "--iterations", "4", "--num-images", "8", "--quiet", "--out", str(out)]) == 0
    for name in ("report.json", "report.md", "quantized.safetensors", "synthetic.png", "synthetic.pt"):
        assert (out / name).is_file()
    import json

    report = json.loads((out / "report.json").read_text())
    # the default data-free combination: DFQ-ViT images with natural-image priors, preset auto →
    # strong-synthetic+recon-relative at W4A8, no ACM
    assert report["method"]["name"] == "dfq-vit-natural" and report["preset"] == "strong-synthetic+recon-relative"
    assert report["method"]["gradient_tilt"] == 1.0 and report["method"]["chroma_scale"] == 0.3
    assert report["quantize"]["acm_every"] == 0 and not report["quantize"]["acm_blocks"]
    parts = " ".join(report["parts_run"])  # every block (no "first N blocks"), fixed inputs, the relative objective
    assert "error relative to each float token's variance" in parts and "first 6 blocks" not in parts
    # the low-pass rule is named, and the σ it took: none for the tiny ViT's 4-pixel patches
    assert "σ read off the images" in parts and "low-pass σ taken: 0 px" in parts
    assert "crop/flip of its images every step" not in parts
    assert len(report["quantize"]["reconstruct"]["block_loss"]) == 4  # all 4 blocks of the tiny model
    assert not (tmp_path / "out.partial").exists()


def test_cli_gradient_tilt_and_chroma_scale_reach_the_synthesis_and_the_report(tmp_path):
    """`--gradient-tilt 1 --chroma-scale 0.3` override the method's fields: the report's method and parts
    list name them."""
    import json

    from dfqvit.cli import main

    out = tmp_path / "out"
    assert main(["run", "--iterations", "2", "--num-images", "8", "--preset", "basic", "--gradient-tilt", "1",
                 "--chroma-scale", "0.3", "--quiet", "--out", str(out)]) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["method"]["gradient_tilt"] == 1.0 and report["method"]["chroma_scale"] == 0.3
    assert "gradient tilted to f^-1" in " ".join(report["parts_run"])
    assert "chroma scaled by 0.3" in " ".join(report["parts_run"])


def test_python_default_run_options_at_4_bit_activations_take_what_the_cli_takes():
    """`dfqvit run --a-bits 4` resolves auto to strong-synthetic+recon; the Python default at the same bits
    must give the same quantizer and the same reconstruction, and refuse a quant= of other bits."""
    import pytest

    from dfqvit.errors import ConfigError
    from dfqvit.pipeline import default_run_options
    from dfqvit.presets import get_preset, quant_config
    from dfqvit.quant.config import QuantConfig

    low = default_run_options(w_bits=4, a_bits=4)
    recon = get_preset("strong-synthetic+recon")
    assert low.preset == "strong-synthetic+recon" and low.quant == quant_config(low.preset, w_bits=4, a_bits=4)
    assert low.reconstruct_steps == recon.reconstruct_steps == 100 and low.reconstruct == {"first_blocks": 6, "fresh_views": True}
    default = default_run_options()  # QuantConfig's bits, as `dfqvit run` without --w-bits / --a-bits
    assert (default.quant.w_bits, default.quant.a_bits) == (QuantConfig().w_bits, QuantConfig().a_bits)
    # 4-bit weights over 8-bit activations: every block, the relative objective, fixed inputs
    assert default.preset == "strong-synthetic+recon-relative" and default.reconstruct_steps == 100
    assert default.reconstruct == {"first_blocks": 0, "fresh_views": False, "objective": "relative"}
    assert default.quant == quant_config("strong-synthetic", w_bits=4, a_bits=8)  # the same quantizer
    six = default_run_options(w_bits=6, a_bits=6)
    assert six.preset == "strong-synthetic" and six.reconstruct_steps == 0 and six.reconstruct == {}
    with pytest.raises(ConfigError, match="a_bits=4"):
        default_run_options(quant=QuantConfig(w_bits=4, a_bits=4))


def test_python_default_run_options_run_the_cli_default_combination(tmp_path):
    import json

    from dfqvit.pipeline import default_run_options, run
    from dfqvit.synthesis import SynthesisOptions

    assert default_run_options().synthesis.num_images == 128
    opts = default_run_options(synthesis=SynthesisOptions(num_images=4, iterations=2), out=str(tmp_path / "o"),
                               progress=False)
    run(opts)
    report = json.loads((tmp_path / "o" / "report.json").read_text())
    assert report["method"]["name"] == "dfq-vit-natural" and report["preset"] == "strong-synthetic+recon-relative"
    assert report["quantize"]["acm_every"] == 0 and not report["quantize"]["acm_blocks"]


def test_methods_lists_the_default_method_with_its_priors(capsys):
    from dfqvit.cli import main

    assert main(["methods"]) == 0
    lines = capsys.readouterr().out.splitlines()
    at = next(i for i, line in enumerate(lines) if line.startswith("dfq-vit-natural "))
    assert "gradient tilt: 1; chroma scale: 0.3" in lines[at + 1]  # its details line names both priors
    assert lines[at + 1].index("terms:") == lines[1].index("terms:")  # one column, however long the name
