import torch

from dfqvit.api import evaluate, load_quantized, observable_copy, quantize, save_quantized, synthesize
from dfqvit.correction.distill import DistillOptions
from dfqvit.quant.config import QuantConfig
from dfqvit.quant.quantizers import UniformQuantizer
from dfqvit.synthesis import SynthesisOptions, get_method
from dfqvit.synthesis.losses import class_term, head_disagreement, make_targets, prior_distance, SynthesisContext
from dfqvit.models.attention import PointRecorder, attention_modules


def test_head_agreement_is_lower_when_heads_agree_and_its_gradient_reaches_the_input(tiny):
    base = torch.randn(2, 1, 16, 24)
    alike = base.repeat(1, 4, 1, 1) + 0.01 * torch.randn(2, 4, 16, 24)
    differ = torch.randn(2, 4, 16, 24)
    assert head_disagreement(alike) < 0.1 * head_disagreement(differ)
    from dfqvit.synthesis.losses import head_agreement_term

    model = observable_copy(tiny.model)
    x = torch.randn(2, 3, 32, 32, requires_grad=True)
    rec = PointRecorder(model, "head_output_point")
    ctx = SynthesisContext(model, x, model(x), torch.zeros(2, dtype=torch.long), attention_modules(model), rec.values,
                           [], torch.Generator(), 0, 1)
    head_agreement_term(ctx).backward()
    assert x.grad.abs().sum() > 0


def test_soft_targets_sum_to_one_and_class_loss_takes_them():
    t = make_targets(20, 10, torch.Generator().manual_seed(0), soft=True)
    assert torch.allclose(t.sum(1), torch.ones(20)) and (t.max(1).values >= 0.5).all()
    logits = torch.randn(20, 10)
    ctx = SynthesisContext(None, None, logits, t, [], [], [], torch.Generator(), 0, 1)
    assert torch.isfinite(class_term(ctx))


def _prior_distance(tiny, images, priors):
    model = observable_copy(tiny.model)
    rec = PointRecorder(model, "probs_point")
    with torch.no_grad():
        logits = model(images)
    ctx = SynthesisContext(model, images, logits, None, attention_modules(model), [], rec.values,
                           torch.Generator(), 0, 1, num_prefix_tokens=1, priors=priors)
    return prior_distance(ctx).item()


def test_attention_prior_alignment_lowers_the_distance_to_the_priors(tiny):
    opts = SynthesisOptions(num_images=8, batch_size=8, iterations=40, seed=0)
    method = get_method("sardfq").with_options(terms={"attention_prior": 1.0})
    res0 = synthesize(tiny, method, SynthesisOptions(num_images=8, batch_size=8, iterations=1, seed=0, lr=1e-6), progress=False)
    res = synthesize(tiny, method, opts, progress=False)
    priors = res.priors
    assert priors is not None and torch.equal(priors, res0.priors)  # same seed, same priors
    assert _prior_distance(tiny, res.images, priors) < 0.95 * _prior_distance(tiny, res0.images, priors)


def test_distillation_raises_held_out_accuracy_and_scales_stay_positive(tiny, tmp_path, digits_heldout):
    # W2A4: on the tiny default W4A4 is already within a point of FP, leaving distillation nothing
    # measurable to recover (see the issue note); 2-bit weights leave a real gap.
    syn = synthesize(tiny, "psaq-lite", SynthesisOptions(num_images=32, iterations=60, seed=0), progress=False)
    cfg = QuantConfig(w_bits=2, a_bits=4)
    q0, _ = quantize(tiny, syn.images, cfg, progress=False)
    q1, info = quantize(tiny, syn.images, cfg, distill_options=DistillOptions(steps=60, terms=("logits", "attention")),
                        progress=False)
    a0 = evaluate(q0, tiny, fp_model=tiny.model, progress=False)
    a1 = evaluate(q1, tiny, fp_model=tiny.model, progress=False)
    assert a1["agreement_top1"] > a0["agreement_top1"]
    assert a1["top1"] >= a0["top1"]
    scales = [q.scale for q in q1.quantizers() if isinstance(q, UniformQuantizer)]
    assert all((s > 0).all() for s in scales)
    assert any(not torch.equal(a.scale, b.scale) for a, b in zip(
        [q for q in q0.quantizers() if isinstance(q, UniformQuantizer)], [q for q in q1.quantizers() if isinstance(q, UniformQuantizer)]))
    q2, _, _ = load_quantized(save_quantized(q1, tiny, tmp_path / "d.safetensors"))
    x = digits_heldout[0][:32]
    with torch.no_grad():
        assert torch.equal(q1(x), q2(x))


def test_methods_compose_and_the_report_says_what_ran(tmp_path):
    import json

    from dfqvit.cli import main

    out = tmp_path / "o"
    # at 4-bit activations auto's synthetic-image reconstruction is the first 6 blocks on fresh views
    assert main(["run", "--quiet", "--method", "sardfq", "--acm-every", "2", "--distill-steps", "3", "--iterations", "3",
                 "--num-images", "8", "--a-bits", "4", "--out", str(out)]) == 0
    r = json.loads((out / "report.json").read_text())
    parts = " ".join(r["parts_run"])
    assert "synthesis[sardfq" in parts and "soft labels" in parts and "distillation[3 steps" in parts
    assert "acm[mean; blocks [1, 3]]" in parts
    assert "QDrop; first 6 blocks: all 4; a new crop/flip of its images every step]" in parts  # the preset on 4 blocks
