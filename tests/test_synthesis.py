import math

import pytest
import torch
import torch.nn.functional as F

from dfqvit.api import observable_copy, synthesize
from dfqvit.errors import SynthesisDivergedError
from dfqvit.synthesis import SynthesisOptions, get_method
from dfqvit.synthesis.losses import LOSS_TERMS, patch_similarity_entropy, register_term
from dfqvit.synthesis.methods import Method
from dfqvit.synthesis.schedules import CropSchedule


def test_e2h_bound_follows_the_cosine_and_h2e_mirrors_it():
    e2h, h2e = CropSchedule("e2h", 1.0, 0.08), CropSchedule("h2e", 1.0, 0.08)
    T = 500
    assert e2h.lower_bound(0, T) == pytest.approx(1.0)
    assert e2h.lower_bound(T // 2, T) == pytest.approx(0.08 + 0.92 * 0.5)
    assert e2h.lower_bound(T, T) == pytest.approx(0.08)
    for t in (0, 37, 250, 411, 500):
        expected = 0.08 + 0.92 * (1 + math.cos(math.pi * t / T)) / 2
        assert e2h.lower_bound(t, T) == pytest.approx(expected)
        assert h2e.lower_bound(t, T) == pytest.approx(e2h.lower_bound(T - t, T))
    assert CropSchedule("fixed", 1.0, 0.3).lower_bound(123, T) == 0.3
    assert CropSchedule("none").lower_bound(0, T) is None


def test_entropy_is_higher_for_diverse_tokens_and_its_gradient_reaches_the_input(tiny):
    diverse = torch.randn(4, 64, 32)
    identical = torch.randn(4, 1, 32).repeat(1, 64, 1) + 0.01 * torch.randn(4, 64, 32)
    assert patch_similarity_entropy(diverse) > patch_similarity_entropy(identical)
    model = observable_copy(tiny.model)
    x = torch.randn(2, 3, 32, 32, requires_grad=True)
    from dfqvit.models.attention import PointRecorder, attention_modules
    from dfqvit.synthesis.losses import SynthesisContext, entropy_term

    rec = PointRecorder(model, "head_output_point")
    logits = model(x)
    ctx = SynthesisContext(model, x, logits, torch.zeros(2, dtype=torch.long), attention_modules(model), rec.values, [],
                           torch.Generator(), 0, 1)
    entropy_term(ctx).backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_short_synthesis_lowers_class_loss_and_hits_targets(tiny):
    opts = SynthesisOptions(num_images=16, batch_size=16, iterations=60, seed=0)
    res = synthesize(tiny, "psaq-lite", opts, progress=False)
    with torch.no_grad():
        start = F.cross_entropy(tiny.model(torch.randn(16, 3, 32, 32, generator=torch.Generator().manual_seed(0))),
                                res.targets)
        logits = tiny.model(res.images)
    assert F.cross_entropy(logits, res.targets) < 0.5 * start
    assert (logits.argmax(1) == res.targets).float().mean() >= 0.4  # chance is 0.1


def test_a_low_pass_in_synthesis_gives_smooth_images_that_still_carry_their_class(tiny):
    """Method.lowpass: the model sees, and the run saves, the images through a Gaussian low-pass, so they
    have little pixel-scale energy yet the synthesis still drives them to their targets; the same seed gives
    the same images; a method without it keeps its earlier description (and so its cache keys)."""
    from dfqvit.data.lowpass import low_pass

    opts = SynthesisOptions(num_images=16, batch_size=16, iterations=60, seed=0)
    smooth = get_method("psaq-lite").with_options(lowpass=1.0)
    res = synthesize(tiny, smooth, opts, progress=False)
    plain = synthesize(tiny, "psaq-lite", opts, progress=False)
    hf = lambda x: (x[..., 1:] - x[..., :-1]).abs().mean()
    assert hf(res.images) < 0.4 * hf(plain.images)
    assert hf(low_pass(res.images, 1.0)) > 0.6 * hf(res.images)  # already smooth: blurring again changes little
    with torch.no_grad():
        assert (tiny.model(res.images).argmax(1) == res.targets).float().mean() >= 0.4  # chance is 0.1
    assert torch.equal(res.images, synthesize(tiny, smooth, opts, progress=False).images)
    assert res.method["lowpass"] == 1.0 and "lowpass" not in plain.method


def test_a_tilted_gradient_grows_large_structures_and_keeps_the_class(tiny):
    """Method.gradient_tilt: each step's image gradient is reweighted towards low frequencies (energy kept),
    so the images end with more of their power at the lowest frequencies than plain-pixel synthesis gives,
    still reach their targets, and the same seed gives the same images."""
    from dfqvit.data.lowpass import radial_power

    opts = SynthesisOptions(num_images=16, batch_size=16, iterations=60, seed=0)
    tilted = get_method("psaq-lite").with_options(gradient_tilt=1.0)
    res = synthesize(tiny, tilted, opts, progress=False)
    plain = synthesize(tiny, "psaq-lite", opts, progress=False)
    low_share = lambda x: float(radial_power(x)[1:4].sum() / radial_power(x)[1:].sum())
    assert low_share(res.images) > 2 * low_share(plain.images)
    with torch.no_grad():
        assert (tiny.model(res.images).argmax(1) == res.targets).float().mean() >= 0.4  # chance is 0.1
    assert torch.equal(res.images, synthesize(tiny, tilted, opts, progress=False).images)
    assert res.method["gradient_tilt"] == 1.0 and "gradient_tilt" not in plain.method


def test_a_chroma_scale_makes_greyer_images_that_keep_the_class(tiny):
    """Method.chroma_scale: the start noise and every step move colour less than brightness, so the images
    end with well under the plain images' spread between channels, still reach their targets, and the same
    seed gives the same images."""
    from dfqvit.data.colour import channel_spread

    opts = SynthesisOptions(num_images=16, batch_size=16, iterations=60, seed=0)
    grey = get_method("psaq-lite").with_options(chroma_scale=0.3)
    res = synthesize(tiny, grey, opts, progress=False)
    plain = synthesize(tiny, "psaq-lite", opts, progress=False)
    mean, std = tiny.data_config["mean"], tiny.data_config["std"]
    assert channel_spread(res.images, mean, std) < 0.6 * channel_spread(plain.images, mean, std)
    with torch.no_grad():
        assert (tiny.model(res.images).argmax(1) == res.targets).float().mean() >= 0.4  # chance is 0.1
    assert torch.equal(res.images, synthesize(tiny, grey, opts, progress=False).images)
    assert res.method["chroma_scale"] == 0.3 and "chroma_scale" not in plain.method


def test_scale_chroma_keeps_the_grey_and_scales_the_rest_in_pixel_space():
    from dfqvit.data.colour import channel_spread, image_chroma_scaled, scale_chroma

    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    x = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    pixels = lambda v: v * torch.tensor(std).view(1, 3, 1, 1) + torch.tensor(mean).view(1, 3, 1, 1)
    y = image_chroma_scaled(x, 0.25, mean, std)
    assert torch.allclose(pixels(y).mean(1), pixels(x).mean(1), atol=1e-5)  # the grey of every pixel kept
    assert channel_spread(y, mean, std) == pytest.approx(0.25 * channel_spread(x, mean, std), rel=1e-4)
    assert torch.allclose(image_chroma_scaled(x, 0.0, mean, std), pixels(x).mean(1, keepdim=True).sub(
        torch.tensor(mean).view(1, 3, 1, 1)).div(torch.tensor(std).view(1, 3, 1, 1)), atol=1e-5)  # 0: pure grey
    change = x * 0.1  # a step: no offset, scaled about zero
    assert torch.allclose(scale_chroma(change, 0.5, std) * torch.tensor(std).view(1, 3, 1, 1),
                          (pixels(change) - torch.tensor(mean).view(1, 3, 1, 1)).mean(1, keepdim=True) * 0.5
                          + 0.5 * (pixels(change) - torch.tensor(mean).view(1, 3, 1, 1)), atol=1e-6)
    assert scale_chroma(x, 1.0, std) is x


def test_denormalise_maps_the_models_input_back_to_pixels():
    from dfqvit.data.colour import scale_chroma
    from dfqvit.data.pixels import denormalise, per_channel

    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    m, s = torch.tensor(mean).view(1, 3, 1, 1), torch.tensor(std).view(1, 3, 1, 1)
    pixels = torch.rand(2, 3, 5, 5, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(denormalise((pixels - m) / s, mean, std), pixels, atol=1e-6)
    std_t = per_channel(std, pixels)
    assert torch.equal(std_t, s)
    change = torch.randn(2, 3, 5, 5, generator=torch.Generator().manual_seed(1))
    assert torch.equal(scale_chroma(change, 0.3, std_t), scale_chroma(change, 0.3, std))  # built once = per call


def test_tilt_spectrum_gives_white_noise_a_photographs_slope_and_keeps_its_energy():
    from dfqvit.data.lowpass import spectral_slope, tilt_spectrum

    noise = torch.randn(4, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    assert abs(spectral_slope(noise)) < 0.2
    pink = tilt_spectrum(noise, 1.0)
    assert abs(spectral_slope(pink) + 2.0) < 0.2
    assert torch.allclose(pink.pow(2).sum((1, 2, 3)), noise.pow(2).sum((1, 2, 3)), rtol=1e-4)
    assert tilt_spectrum(noise, 0.0) is noise


def _interrupt_at(k):
    def cb(batch, it):
        if batch == 1 and it == k:
            raise KeyboardInterrupt
    return cb


def test_resume_after_interruption_matches_a_straight_run(tiny, tmp_path):
    opts = SynthesisOptions(num_images=8, batch_size=4, iterations=12, checkpoint_every=5, seed=3)
    straight = synthesize(tiny, "dfq-vit", opts, progress=False)
    ckpt = tmp_path / "ckpt.pt"
    from dfqvit.synthesis.loop import synthesize_images

    model = observable_copy(tiny.model)
    args = (model, get_method("dfq-vit"), (3, 32, 32), 10, (0.5,) * 3, (0.5,) * 3, opts)
    with pytest.raises(KeyboardInterrupt):
        synthesize_images(*args, checkpoint_path=ckpt, progress=False, on_iteration=_interrupt_at(7))
    assert ckpt.is_file()
    resumed = synthesize_images(*args, checkpoint_path=ckpt, resume=True, progress=False)
    assert torch.equal(resumed.images, straight.images)


def test_nan_in_a_loss_term_names_it_and_keeps_the_last_checkpoint(tiny, tmp_path):
    @register_term("nan_after_6")
    def nan_after_6(ctx):
        return torch.tensor(float("nan")) if ctx.iteration >= 6 else ctx.logits.sum() * 0

    try:
        method = Method("nan-test", {"class": 1.0, "nan_after_6": 1.0})
        ckpt = tmp_path / "ckpt.pt"
        opts = SynthesisOptions(num_images=4, batch_size=4, iterations=20, checkpoint_every=5)
        from dfqvit.synthesis.loop import synthesize_images

        with pytest.raises(SynthesisDivergedError, match="'nan_after_6' is nan at iteration 6 of batch 0"):
            synthesize_images(observable_copy(tiny.model), method, (3, 32, 32), 10, (0.5,) * 3, (0.5,) * 3, opts,
                              checkpoint_path=ckpt, progress=False)
        state = torch.load(ckpt, weights_only=True)
        assert state["iteration"] == 5 and torch.isfinite(state["images"]).all()
    finally:
        LOSS_TERMS.pop("nan_after_6")


def test_cli_nan_keeps_checkpoint_but_no_output(tmp_path, capsys, monkeypatch):
    from dfqvit.cli import main
    from dfqvit.synthesis import losses

    monkeypatch.setitem(losses.LOSS_TERMS, "tv", lambda ctx: torch.tensor(float("inf")) if ctx.iteration >= 3 else ctx.images.sum() * 0)
    out = tmp_path / "out"
    code = main(["run", "--quiet", "--iterations", "10", "--num-images", "4", "--checkpoint-every", "2", "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 2 and "loss term 'tv' is inf at iteration 3" in err
    assert not out.exists() and (tmp_path / "out.partial" / "synthesis_checkpoint.pt").is_file()


@pytest.mark.parametrize("size", [(8, 8), (7, 11), (32, 32)])
def test_crops_as_interpolation_matrices_equal_affine_grid_and_grid_sample(size):
    """apply_crop computes grid_sample's bilinear, reflection-padded crop as two matrix products
    (deterministic on CUDA, unlike grid_sample's atomic backward): the same values and input
    gradients, for the drawn crops and for zooms out and shifts past the border (reflection)."""
    from dfqvit.synthesis.schedules import apply_crop, crop_theta

    gen = torch.Generator().manual_seed(0)
    x = torch.randn(5, 3, *size, dtype=torch.float64, generator=gen, requires_grad=True)
    wild = torch.zeros(5, 2, 3)
    wild[:, 0, 0], wild[:, 1, 1] = 3 * torch.rand(5, generator=gen), 3 * torch.rand(5, generator=gen) - 1.5
    wild[:, 0, 2], wild[:, 1, 2] = 2 * torch.randn(5, generator=gen), 2 * torch.randn(5, generator=gen)
    for theta in (crop_theta(5, (0.08, 1.0), gen), wild):
        grid = F.affine_grid(theta.double(), list(x.shape), align_corners=False)
        ref = F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)
        out = apply_crop(x, theta)
        g = torch.randn(out.shape, dtype=torch.float64, generator=gen)
        torch.testing.assert_close(out, ref, rtol=0, atol=1e-12)
        torch.testing.assert_close(torch.autograd.grad(out, x, g)[0], torch.autograd.grad(ref, x, g)[0], rtol=0, atol=1e-12)


def test_dfq_vit_natural_is_dfq_vit_with_the_two_priors_and_synthesizes_the_same_images(tiny):
    """The benchmarks measured the default method as `dfq-vit` with overrides (row `dfq-vit, chroma 0.3 and 1/f
    gradient in synthesis`): the registered method must be that, and make those images."""
    from dataclasses import replace

    natural = get_method("dfq-vit-natural")
    measured = get_method("dfq-vit").with_options(chroma_scale=0.3, gradient_tilt=1.0)
    assert replace(measured, name=natural.name, description=natural.description) == natural
    opts = SynthesisOptions(num_images=4, batch_size=4, iterations=3, seed=2)
    assert torch.equal(synthesize(tiny, natural, opts, progress=False).images,
                       synthesize(tiny, measured, opts, progress=False).images)


def test_a_chroma_scale_per_axis_scales_red_blue_and_green_magenta_apart():
    from dfqvit.data.colour import CHROMA_AXES, scale_chroma

    std = (0.229, 0.224, 0.225)
    s = torch.tensor(std).view(1, 3, 1, 1)
    field = torch.randn(2, 3, 6, 6, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(scale_chroma(field, (0.3, 0.3), std), scale_chroma(field, 0.3, std), atol=1e-6)

    def parts(v):  # grey and the two chroma coordinates, in pixel space
        pixels = v * s
        axes = torch.tensor(CHROMA_AXES)
        return pixels.mean(1), torch.einsum("nchw,kc->nkhw", pixels - pixels.mean(1, keepdim=True), axes)

    grey, chroma = parts(field)
    grey2, chroma2 = parts(scale_chroma(field, (0.5, 0.1), std))
    assert torch.allclose(grey2, grey, atol=1e-6)
    assert torch.allclose(chroma2[:, 0], 0.5 * chroma[:, 0], atol=1e-6)  # red-blue
    assert torch.allclose(chroma2[:, 1], 0.1 * chroma[:, 1], atol=1e-6)  # green-magenta
    assert scale_chroma(field, (1.0, 1.0), std) is field
