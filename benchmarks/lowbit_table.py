"""The low-bit table: ImageNet ViT-Tiny at W6A6 / W4A8 / W4A4 / W3A3, real and data-free calibration.

    python benchmarks/lowbit_table.py --rows real --bits 4/4,3/3
    python benchmarks/lowbit_table.py --rows dfq-vit --variants "strong-synthetic;strong-synthetic + compensation"

Rows are calibration sources (32 images: real ones from calib/, or synthesized with 500
iterations); columns are bit settings; one table per quantizer variant (a preset, or a preset with
options changed). Variants without "adalog" in their name pin the twin-uniform post-GELU quantizer the
presets had when they were measured; `strong` and `strong-synthetic` now take adalog at ≤ 4 bits
(their "+ adalog" rows). Cells go to benchmarks/results/lowbit_<model>.json as they finish (a re-run
skips the cells it has), then the markdown table is written beside it.
"""
from __future__ import annotations

from common import row
from quantizer_table import table_main


def synthetic_recon(views: int = 4, steps: int | None = None, **reconstruct) -> dict:
    """A `strong-synthetic+recon` variant pinned to what it was measured with: the preset reconstructed the
    first 3 blocks on fixed inputs until 2026-12-03 (the first 6 on fresh views since), so a re-run of an old
    cell means what it meant then."""
    variant = {"base": "strong-synthetic+recon", "calib_views": views,
               "reconstruct": {"first_blocks": 3, "fresh_views": False, **reconstruct}}
    return variant if steps is None else {**variant, "reconstruct_steps": steps}


TWIN = {"gelu_quantizer": "twin"}  # the post-GELU quantizer of the presets before adalog ("+ adalog": today's presets)
VARIANTS = {
    "strong": {"base": "strong", **TWIN},
    "strong-synthetic": {"base": "strong-synthetic", **TWIN},
    "strong + compensation": {"base": "strong", "act_compensation": "ridge", **TWIN},
    "strong-synthetic + compensation": {"base": "strong-synthetic", "act_compensation": "ridge", **TWIN},
    "strong-synthetic + GPTQ": {"base": "strong-synthetic", "weight_rounding": "gptq", **TWIN},
    "strong-synthetic + GPTQ + compensation": {"base": "strong-synthetic", "weight_rounding": "gptq",
                                               "act_compensation": "ridge", **TWIN},
    "strong-synthetic + adalog": {"base": "strong-synthetic", "gelu_quantizer": "adalog"},
    "strong + adalog": {"base": "strong", "gelu_quantizer": "adalog"},
    "strong-synthetic + adalog + compensation": {"base": "strong-synthetic", "gelu_quantizer": "adalog",
                                                 "act_compensation": "ridge"},
    # the plain-MSE reconstruction `strong+recon` had when these were measured (Fisher-weighted, lr 0.1, since)
    "strong+recon": {"base": "strong+recon", "reconstruct": {"objective": "mse", "lr": 0.01}, **TWIN},
    "strong+recon + compensation": {"base": "strong+recon", "act_compensation": "ridge",
                                    "reconstruct": {"objective": "mse", "lr": 0.01}, **TWIN},
    # the pre-views presets at ≤ 4 bits (calibration on the images alone) and with 4 views per image
    "strong-synthetic + adalog, no views": {"base": "strong-synthetic", "gelu_quantizer": "adalog", "calib_views": 1},
    "strong-synthetic + adalog + 4 views": {"base": "strong-synthetic", "gelu_quantizer": "adalog", "calib_views": 4},
    "strong + adalog + 4 views": {"base": "strong", "gelu_quantizer": "adalog", "calib_views": 4},
    # more views per synthetic image: is 4 the knee? (and views at 8-bit activations, where the presets use none)
    "strong-synthetic + adalog + 8 views": {"base": "strong-synthetic", "gelu_quantizer": "adalog", "calib_views": 8},
    "strong-synthetic + adalog + 16 views": {"base": "strong-synthetic", "gelu_quantizer": "adalog", "calib_views": 16},
    "strong-synthetic + 4 views": {"base": "strong-synthetic", "calib_views": 4, **TWIN},
    # does the output-error search still hurt synthetic calibration once it sees 4 views per image?
    "strong-synthetic + adalog + 4 views, no search": {"base": "strong-synthetic", "gelu_quantizer": "adalog",
                                                       "calib_views": 4, "act_search": "none"},
    "strong-synthetic + adalog + 4 views + adalog softmax": {"base": "strong-synthetic", "gelu_quantizer": "adalog",
                                                             "calib_views": 4, "softmax_quantizer": "adalog"},
    # AdaLog's searched-base log grid for the softmax output too
    "strong + adalog + adalog softmax": {"base": "strong", "gelu_quantizer": "adalog", "softmax_quantizer": "adalog"},
    "strong-synthetic + adalog + adalog softmax": {"base": "strong-synthetic", "gelu_quantizer": "adalog",
                                                   "softmax_quantizer": "adalog"},
    # SARDFQ's protocol on top of today's presets: 100 steps of block reconstruction per block
    "strong + adalog + recon": {"base": "strong", "gelu_quantizer": "adalog", "reconstruct_steps": 100},
    "strong-synthetic + adalog + recon": {"base": "strong-synthetic", "gelu_quantizer": "adalog",
                                          "reconstruct_steps": 100},
    # reconstruction fed the 4 crop/flip views of each synthetic image instead of the 32 images alone
    "strong-synthetic + adalog + 4 views + recon": {"base": "strong-synthetic", "gelu_quantizer": "adalog",
                                                    "calib_views": 4, "reconstruct_steps": 100},
    # the reconstruction objective weighted by the float model's Fisher diagonal (BRECQ / APHQ-ViT / FIMA-Q)
    "strong-synthetic + adalog + 4 views + fisher recon, lr 0.1": {
        "base": "strong-synthetic", "gelu_quantizer": "adalog", "calib_views": 4, "reconstruct_steps": 100,
        "reconstruct": {"objective": "fisher", "lr": 0.1}},
    "strong-synthetic + adalog + 4 views + recon, lr 0.1": {
        "base": "strong-synthetic", "gelu_quantizer": "adalog", "calib_views": 4, "reconstruct_steps": 100,
        "reconstruct": {"lr": 0.1}},
    # reconstruction of the blocks before the massive activations only (a per-block probe: recon_probe.py)
    "strong-synthetic + adalog + 4 views + recon of blocks 0-2": {
        "base": "strong-synthetic", "gelu_quantizer": "adalog", "calib_views": 4, "reconstruct_steps": 100,
        "reconstruct": {"first_blocks": 3}},
    "strong-synthetic + adalog + 4 views + recon of blocks 0-6": {
        "base": "strong-synthetic", "gelu_quantizer": "adalog", "calib_views": 4, "reconstruct_steps": 100,
        "reconstruct": {"first_blocks": 7}},
    "strong + adalog + fisher recon, lr 0.1": {"base": "strong", "gelu_quantizer": "adalog", "reconstruct_steps": 100,
                                               "reconstruct": {"objective": "fisher", "lr": 0.1}},
    # the presets as they stood on 2026-12-02 (run_grid calibrates on the images alone unless a variant names its
    # views); `strong-synthetic+recon` then reconstructed the first 3 blocks, since 2026-12-03 the first 6
    "strong-synthetic, no recon": {"base": "strong-synthetic", "calib_views": 4},
    "strong-synthetic+recon": synthetic_recon(),
    "strong-synthetic+recon, 300 steps": synthetic_recon(steps=300),
    "strong-synthetic+recon, no views": synthetic_recon(views=1),
    "strong-synthetic+recon, no views, fisher lr 0.1": synthetic_recon(views=1, objective="fisher", lr=0.1),
    "strong-synthetic+recon, no views, 300 steps": synthetic_recon(views=1, steps=300),
    # do PSAQ-ViT's images carry the reconstruction deeper than DFQ-ViT's (whose blocks 3+ do not transfer)? (the
    # preset since 2026-12-03)
    "strong-synthetic+recon, first 6 blocks": synthetic_recon(first_blocks=6),
    "strong-synthetic+recon, every block": synthetic_recon(first_blocks=0),
    # every reconstruction step on a new crop/flip of its images (block inputs recomputed), not fixed inputs
    "strong-synthetic+recon, first 6 blocks, fresh views": synthetic_recon(first_blocks=6, fresh_views=True),
    # fresh views beyond the first 6 blocks: do they stop the collapse of every-block reconstruction (20.0 % fixed)?
    "strong-synthetic+recon, every block, fresh views": synthetic_recon(first_blocks=0, fresh_views=True),
    # each token's error relative to its float variance (recon_probe: every block no longer collapses, KL 1.996
    # against 3.921 with plain MSE on held-out real images): the preset with it, and every block with it
    "strong-synthetic+recon, relative": {"base": "strong-synthetic+recon", "reconstruct": {"objective": "relative"}},
    "strong-synthetic+recon, every block, relative": synthetic_recon(first_blocks=0, objective="relative"),
    "strong-synthetic+recon, every block, relative, fresh views": synthetic_recon(first_blocks=0, objective="relative",
                                                                                fresh_views=True),
    # the real-image preset with the relative objective in place of the Fisher weights (lr 0.1 kept)
    "strong+recon, relative": {"base": "strong+recon", "reconstruct": {"objective": "relative"}},
    "strong+recon, fisher": {"base": "strong+recon"},
    # real images through new crop/flip views every step (the digits model's Fisher test: fixed inputs overfit)
    "strong+recon, fisher, fresh views": {"base": "strong+recon", "reconstruct": {"fresh_views": True}},
    # APHQ-ViT's MLP reconstruction: ReLU MLPs fitted to the GELU ones before calibration, then the preset
    "strong+recon, fisher + relu MLP": {"base": "strong+recon", "mlp_activation": "relu"},
    "strong+recon, fisher + relu MLP, uniform fc2 input": {"base": "strong+recon", "mlp_activation": "relu",
                                                           "gelu_quantizer": "uniform"},
    "strong+recon, fisher, 300 steps": {"base": "strong+recon", "reconstruct_steps": 300},
    "strong+recon, fisher + 4 views": {"base": "strong+recon", "calib_views": 4},
    # GPTQ on synthetic images without block 0's reparameterization (`strong` on DFQ-ViT images, which has both,
    # collapsed W4A4 to 1.2 %), at GPTQ's usual damping and at ten and a hundred times it (a larger ridge trusts the
    # synthetic images' input correlations less; at very large damping GPTQ approaches nearest rounding)
    "strong-synthetic + GPTQ, 4 views": {"base": "strong-synthetic", "weight_rounding": "gptq", "calib_views": 4},
    "strong-synthetic + GPTQ damp 0.1, 4 views": {"base": "strong-synthetic", "weight_rounding": "gptq",
                                                  "gptq_damp": 0.1, "calib_views": 4},
    "strong-synthetic + GPTQ damp 1, 4 views": {"base": "strong-synthetic", "weight_rounding": "gptq",
                                                "gptq_damp": 1.0, "calib_views": 4},
    # the calibration images low-passed (Gaussian σ in input pixels): synthetic images are near white noise at
    # high frequencies where photographs fall as f^-2 (data/lowpass.py)
    "strong-synthetic, no recon, blur 1": {"base": "strong-synthetic", "calib_views": 4, "calib_blur": 1.0},
    "strong-synthetic, no recon, blur 0.5": {"base": "strong-synthetic", "calib_views": 4, "calib_blur": 0.5},
    "strong-synthetic, no recon, blur 1.5": {"base": "strong-synthetic", "calib_views": 4, "calib_blur": 1.5},
    "strong-synthetic, no recon, blur 2": {"base": "strong-synthetic", "calib_views": 4, "calib_blur": 2.0},
    "strong-synthetic, no recon, blur 0.75": {"base": "strong-synthetic", "calib_views": 4, "calib_blur": 0.75},
    "strong-synthetic, no recon, blur 1.25": {"base": "strong-synthetic", "calib_views": 4, "calib_blur": 1.25},
    "strong-synthetic+recon, first 6 blocks, fresh views, blur 1": {
        **synthetic_recon(first_blocks=6, fresh_views=True), "calib_blur": 1.0},
    "strong-synthetic+recon, every block, relative, blur 1": {
        **synthetic_recon(first_blocks=0, objective="relative"), "calib_blur": 1.0},
    # what the spectrum rule alone asks on the CIFAR Swin's DFQ-ViT images (σ 0.6); `auto` now leaves its
    # 2-pixel patches alone (data/lowpass.MIN_PATCH_PIXELS)
    "strong-synthetic+recon, first 6 blocks, fresh views, blur 0.6": {
        **synthetic_recon(first_blocks=6, fresh_views=True), "calib_blur": 0.6},
    # σ read off the images (`--calib-blur auto`, the presets' since 2026-12-07): the smallest giving an f^-2
    # spectrum, for patches of 8 pixels or more
    "strong-synthetic, no recon, blur auto": {"base": "strong-synthetic", "calib_views": 4, "calib_blur": "auto"},
    "strong-synthetic+recon, first 6 blocks, fresh views, blur auto": {
        **synthetic_recon(first_blocks=6, fresh_views=True), "calib_blur": "auto"},
    "strong-synthetic+recon, every block, relative, blur auto": {
        **synthetic_recon(first_blocks=0, objective="relative"), "calib_blur": "auto"},
    # with dfq-vit-natural's images, the W4A8 preset beat the W4A4 one at W4A4 (54.7 against 53.7): with each
    # step on a new crop/flip too? (over 30 minutes a cell on one thread: stopped unmeasured on 2026-12-08)
    "strong-synthetic+recon, every block, relative, fresh views, blur auto": {
        **synthetic_recon(first_blocks=0, objective="relative", fresh_views=True), "calib_blur": "auto"},
    # once low-passed, do synthetic images still mislead the two parts strong-synthetic leaves out (GPTQ fits the
    # images' input covariance, block 0's reparameterization their low-level channel statistics)?
    "strong-synthetic + GPTQ, no recon, blur auto": {"base": "strong-synthetic", "weight_rounding": "gptq",
                                                     "calib_views": 4, "calib_blur": "auto"},
    "strong-synthetic + block-0 reparam, no recon, blur auto": {"base": "strong-synthetic", "reparam_skip_blocks": 0,
                                                                "calib_views": 4, "calib_blur": "auto"},
    # the reconstruction preset with the real-image preset's Fisher-weighted objective, on the low-passed images
    "strong-synthetic+recon, first 6 blocks, fresh views, blur auto, fisher": {
        **synthetic_recon(first_blocks=6, fresh_views=True, objective="fisher"), "calib_blur": "auto"},
    # once low-passed, does the reconstruction transfer deeper than the first 6 blocks (unblurred: every block
    # with fresh views fell to 22.5 %)?
    "strong-synthetic+recon, first 9 blocks, fresh views, blur auto": {
        **synthetic_recon(first_blocks=9, fresh_views=True), "calib_blur": "auto"},
    "strong-synthetic+recon + compensation": {"base": "strong-synthetic", "act_compensation": "ridge",
                                              "reconstruct_steps": 100, **TWIN},
}
# strong-synthetic low-passes its calibration images since 2026-12-07 (calib_blur 1): every variant measured before
# pins it off, so that a re-run of an old cell means what it meant then (the "blur" variants name theirs)
for _variant in VARIANTS.values():
    if _variant["base"].startswith("strong-synthetic"):
        _variant.setdefault("calib_blur", 0.0)
ROWS = [row("real", "real"), row("dfq-vit", "dfq-vit"), row("psaq", "psaq"), row("mimiq", "mimiq"),
        row("sardfq", "sardfq"),
        # MimiQ's protocol on DFQ-ViT's images: 200 steps of logit + head-wise attention distillation
        {**row("dfq-vit + distillation", "dfq-vit", distill=200), "distill_terms": ("logits", "attention")},
        # the synthesis augmentations as calibration views: 32 images + 96 random-resized crops / flips of them
        {**row("dfq-vit, 32 images as 128 crop/flip views", "dfq-vit"), "views": 128},
        {**row("real, 32 images as 128 crop/flip views", "real"), "views": 128},
        # more images without another synthesis: the DFQ-ViT and PSAQ-ViT sets together (64 images)
        {**row("dfq-vit + psaq (64 images)", "dfq-vit"), "also": ("psaq",)},
        # with --num-images N: the first 32 of the N images (is it the number of images or how they were made?)
        {**row("psaq, first 32 images", "psaq"), "first": 32},
        {**row("psaq + distillation", "psaq", distill=200), "distill_terms": ("logits", "attention")},
        {**row("psaq, first 32 images + distillation", "psaq", distill=200), "distill_terms": ("logits", "attention"),
         "first": 32},
        # 128 images as the default `dfqvit run` takes, made as four seeded sets of 32 (the run's seed and the
        # next three) so that two one-thread processes synthesize them in parallel (synthesize_sets.py)
        {**row("dfq-vit, 4 sets of 32 (128 images)", "dfq-vit"), "also_seeds": (1, 2, 3)},
        # DFQ-ViT synthesized through a Gaussian low-pass (σ 1 px): the model sees, and the run saves, blurred
        # images, so they have a photograph's falling spectrum and still carry the class (data/lowpass.py)
        row("dfq-vit, low-pass 1 in synthesis", "dfq-vit", lowpass=1.0),
        # DFQ-ViT with each step's image gradient tilted to f^-1 amplitudes (Method.gradient_tilt): large structures
        # grow as fast as texture, where pixel-space Adam leaves the lowest frequencies ~40× under a photograph's
        row("dfq-vit, 1/f gradient in synthesis", "dfq-vit", gradient_tilt=1.0),
        # DFQ-ViT with the chroma of its start noise and of each step scaled by 0.3 (Method.chroma_scale): a
        # photograph's colour varies about a third as much as its brightness; synthetic images are ~3× as colourful
        row("dfq-vit, chroma 0.3 in synthesis", "dfq-vit", chroma_scale=0.3),
        row("dfq-vit, chroma 0.3 and 1/f gradient in synthesis", "dfq-vit", chroma_scale=0.3, gradient_tilt=1.0),
        # ... with SARDFQ's soft targets (50-90 % on the class): the float model is 0.95 sure of DFQ-ViT's images
        # and 0.71 of photographs; a soft target's cross-entropy is lowest where its confidence equals the target's
        # the colour covariance's two chroma axes apart: red-blue 0.28, green-magenta 0.13 (the tilted images'
        # large fields are magenta and green)
        row("dfq-vit, chroma 0.28/0.13 and 1/f gradient in synthesis", "dfq-vit", chroma_scale=(0.28, 0.13),
            gradient_tilt=1.0),
        row("dfq-vit, chroma 0.3, 1/f gradient and soft labels in synthesis", "dfq-vit", chroma_scale=0.3,
            gradient_tilt=1.0, soft_labels=True)]


def main() -> None:
    table_main(__doc__, VARIANTS, ROWS, "lowbit", "low bits", "4/4,3/3", "strong;strong-synthetic", "real;dfq-vit", 500,
               columns=["W6A6", "W4A8", "W4A4", "W3A3"])


if __name__ == "__main__":
    main()
