"""transformers folders (`--model-dir`): ViT, DeiT and Swin mapped onto timm, through the whole pipeline."""
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

transformers = pytest.importorskip("transformers", reason="the hf extra (transformers) is not installed")

from dfqvit.cli import main  # noqa: E402
from dfqvit.errors import CheckpointError, ConfigError  # noqa: E402
from dfqvit.models import load_model  # noqa: E402

SHARED = Path(__file__).resolve().parents[2] / "shared"
LABELS = 3


def _config(kind: str):
    small = dict(num_labels=LABELS, initializer_range=0.2)
    if kind == "vit":
        return transformers.ViTForImageClassification, transformers.ViTConfig(
            image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
            intermediate_size=64, **small)
    if kind == "deit":
        return transformers.DeiTForImageClassification, transformers.DeiTConfig(
            image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
            intermediate_size=64, **small)
    # 32 px, patch 2: a 16×16 grid, windows of 4 (shifted in odd blocks), then 8×8
    return transformers.SwinForImageClassification, transformers.SwinConfig(
        image_size=32, patch_size=2, embed_dim=16, depths=[2, 2], num_heads=[2, 4], window_size=4, **small)


def _save(kind: str, folder: Path, processor: bool = True):
    cls, config = _config(kind)
    torch.manual_seed(0)
    model = cls(config).eval()
    model.save_pretrained(folder)
    if processor:
        transformers.ViTImageProcessor(size={"height": 32, "width": 32}).save_pretrained(folder)
    return model


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("hf")
    return {kind: (root / kind, _save(kind, root / kind)) for kind in ("vit", "deit", "swin")}


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    root = tmp_path_factory.mktemp("hf-images")
    rng = np.random.default_rng(0)
    for c in range(LABELS):
        (root / str(c)).mkdir()
        for i in range(2):
            Image.fromarray(rng.integers(0, 255, (40, 40, 3), dtype=np.uint8)).save(root / str(c) / f"{i}.png")
    return root


@pytest.mark.parametrize("kind", ["vit", "deit", "swin"])
def test_mapped_model_gives_transformers_logits(folders, kind):
    folder, reference = folders[kind]
    loaded = load_model(hf_dir=folder)
    x = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        want, got = reference(pixel_values=x).logits, loaded.model(x)
    assert torch.allclose(got, want, atol=1e-5 * want.abs().max().item())
    assert loaded.num_classes == LABELS and loaded.hf_config["model_type"] == kind
    assert loaded.data_config["input_size"] == (3, 32, 32) and loaded.data_config["mean"] == (0.5, 0.5, 0.5)
    # the observable attention (what synthesis and the quantizer read) computes the same function
    from dfqvit.models import make_observable
    import copy

    observable = make_observable(copy.deepcopy(loaded.model))
    with torch.no_grad():
        assert torch.allclose(observable(x), want, atol=1e-5 * want.abs().max().item())


@pytest.mark.parametrize("kind", ["vit", "deit", "swin"])
def test_run_evaluate_export_on_a_transformers_folder(folders, images, tmp_path, capsys, kind):
    folder, _ = folders[kind]
    out = tmp_path / "out"
    code = main(["run", "--model-dir", str(folder), "--method", "dfq-vit", "--num-images", "4", "--iterations", "2",
                 "--batch-size", "4", "--data", str(images), "--export", "onnx", "--quiet", "--out", str(out)])
    assert code == 0, capsys.readouterr().err
    report = json.loads((out / "report.json").read_text())
    assert report["model"].startswith("transformers:")
    capsys.readouterr()
    # the artefact rebuilds without the folder; with it, the float model is the reference
    assert main(["evaluate", "--quantized", str(out / "quantized.safetensors"), "--data", str(images), "--quiet"]) == 0
    alone = json.loads(capsys.readouterr().out)
    assert main(["evaluate", "--quantized", str(out / "quantized.safetensors"), "--model-dir", str(folder),
                 "--data", str(images), "--quiet"]) == 0
    with_fp = json.loads(capsys.readouterr().out)
    assert alone["top1"] == with_fp["top1"] == report["evaluation"]["top1"] and "agreement_top1" in with_fp
    # the ONNX QDQ export runs in ONNX Runtime and agrees with the PyTorch quantized model
    assert main(["evaluate", "--onnx", str(out / "model.onnx"), "--quantized", str(out / "quantized.safetensors"),
                 "--data", str(images), "--quiet"]) == 0
    onnx = json.loads(capsys.readouterr().out)
    assert onnx["agreement_top1"] >= 80.0  # 6 random images: one disagreement is 16.7 points


def test_quantized_artefact_reloads_with_identical_logits(folders):
    from dfqvit import api
    from dfqvit.export import load_quantized, save_quantized
    from dfqvit.presets import quant_config

    folder, _ = folders["swin"]
    loaded = load_model(hf_dir=folder)
    x = torch.randn(8, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    q, _ = api.quantize(loaded, x, quant_config("strong", w_bits=4, a_bits=4), progress=False)
    path = save_quantized(q, loaded, folder.parent / "swin-q.safetensors")
    q2, loaded2, meta = load_quantized(path)
    with torch.no_grad():
        assert torch.equal(q(x), q2(x))
    assert meta["hf_config"]["model_type"] == "swin" and loaded2.name == loaded.name


def test_broken_folders_get_one_line_each(folders, tmp_path, capsys):
    src, _ = folders["vit"]
    no_weights = tmp_path / "no-weights"
    no_weights.mkdir()
    (no_weights / "config.json").write_text((src / "config.json").read_text())
    with pytest.raises(CheckpointError, match="holds no weights"):
        load_model(hf_dir=no_weights)

    not_classifier = tmp_path / "vit-model"
    transformers.ViTModel(_config("vit")[1]).save_pretrained(not_classifier)
    with pytest.raises(ConfigError, match="ViTModel, not a supported image classifier"):
        load_model(hf_dir=not_classifier)

    wrong_count = tmp_path / "wrong-count"
    _save("vit", wrong_count)
    config = json.loads((wrong_count / "config.json").read_text())
    config["id2label"] = {str(i): f"class{i}" for i in range(10)}
    config["label2id"] = {f"class{i}": i for i in range(10)}
    (wrong_count / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="10 labels .* classifier in the weights has 3 outputs"):
        load_model(hf_dir=wrong_count)

    no_processor = tmp_path / "no-processor"
    _save("vit", no_processor, processor=False)
    with pytest.raises(ConfigError, match="no preprocessor_config.json"):
        load_model(hf_dir=no_processor)

    for folder in (no_weights, not_classifier, wrong_count, tmp_path / "absent"):
        capsys.readouterr()
        assert main(["evaluate", "--model-dir", str(folder), "--quiet"]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("dfqvit: error:") and "\n" not in err, err


def test_pickle_only_folder_is_refused_with_the_conversion_hint(folders, tmp_path):
    src, model = folders["vit"]
    folder = tmp_path / "bin"
    folder.mkdir()
    (folder / "config.json").write_text((src / "config.json").read_text())
    torch.save(model.state_dict(), folder / "pytorch_model.bin")
    with pytest.raises(CheckpointError, match="safetensors only.*save_pretrained"):
        load_model(hf_dir=folder)


def test_preprocessing_maps_resize_and_crop_onto_timm_transforms(tmp_path):
    from dfqvit.data.folder import eval_transform
    from dfqvit.models.hf import data_config_from_processor

    rng = np.random.default_rng(0)
    image = Image.fromarray(rng.integers(0, 255, (300, 260, 3), dtype=np.uint8))
    # DeiT's processor: squash to 256×256, centre crop 224
    (tmp_path / "preprocessor_config.json").write_text(json.dumps(transformers.DeiTImageProcessor().to_dict()))
    cfg = data_config_from_processor(tmp_path, (224, 224), 3)
    ours = eval_transform(cfg)(image)
    theirs = transformers.DeiTImageProcessor()(image, return_tensors="pt")["pixel_values"][0]
    assert ours.shape == theirs.shape == (3, 224, 224)
    assert (ours - theirs).abs().mean() < 0.02  # PIL vs torchvision resampling: the same image to within rounding
    wrong = json.loads((tmp_path / "preprocessor_config.json").read_text())
    wrong["crop_size"] = {"height": 192, "width": 192}
    (tmp_path / "preprocessor_config.json").write_text(json.dumps(wrong))
    with pytest.raises(ConfigError, match="makes 192×192 images, the model's config expects 224×224"):
        data_config_from_processor(tmp_path, (224, 224), 3)


def test_models_command_lists_the_transformers_architectures(capsys):
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    for arch in ("ViTForImageClassification", "DeiTForImageClassification", "SwinForImageClassification"):
        assert f"transformers {arch}" in out


@pytest.mark.skipif(not (SHARED / "imagenet").is_dir(), reason="../shared/imagenet is absent")
def test_imagenet_vit_tiny_as_a_transformers_folder_matches_timm(tmp_path):
    import importlib.util

    from dfqvit import api
    from dfqvit.models import load_model_config

    spec = importlib.util.spec_from_file_location("timm_to_hf", Path(__file__).parents[1] / "scripts" / "timm_to_hf.py")
    converter = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(converter)
    timm_loaded = load_model_config(SHARED / "imagenet" / "vit_tiny_patch16_224.json")
    folder = converter.convert(timm_loaded, tmp_path / "vit-tiny")
    hf_loaded = load_model(hf_dir=folder)
    assert hf_loaded.class_names[0].startswith("tench")
    # ImageNet descriptions as class names, synset folders: still the ImageNet-1k order
    x, y = api.load_eval_tensors(hf_loaded, SHARED / "imagenet" / "calib")
    x_t, y_t = api.load_eval_tensors(timm_loaded, SHARED / "imagenet" / "calib")
    assert torch.equal(x, x_t) and torch.equal(y, y_t)
    reference = transformers.ViTForImageClassification.from_pretrained(str(folder), local_files_only=True,
                                                                       attn_implementation="eager").eval()
    x = x[:16]
    with torch.no_grad():
        want = timm_loaded.model(x)
        assert torch.equal(hf_loaded.model(x), want)  # the same arithmetic, the same float sums
        assert torch.allclose(reference(pixel_values=x).logits, want, atol=1e-4 * want.abs().max().item())


@pytest.mark.parametrize("kind", ["deit", "swin"])
def test_every_correction_runs_on_a_transformers_model_and_lowers_its_error(folders, kind):
    """GPTQ, output search, reparameterization, reconstruction, distillation and ACM on the mapped
    model: the corrections lower the output error against the float model on held-out inputs."""
    from dfqvit import api
    from dfqvit.correction.distill import DistillOptions
    from dfqvit.correction.reconstruct import ReconstructOptions
    from dfqvit.presets import quant_config

    folder, _ = folders[kind]
    loaded = load_model(hf_dir=folder)
    gen = torch.Generator().manual_seed(3)
    calib, held_out = torch.randn(16, 3, 32, 32, generator=gen), torch.randn(16, 3, 32, 32, generator=gen)
    config = quant_config("strong", w_bits=4, a_bits=4)
    plain, _ = api.quantize(loaded, calib, config, progress=False)
    corrected, info = api.quantize(loaded, calib, config, acm_every=1, progress=False,
                                   distill_options=DistillOptions(steps=20, terms=("logits", "attention")),
                                   reconstruct_options=ReconstructOptions(steps=20))
    assert info["acm_blocks"] and info["reparameterized_layers"] and info["gptq_layers"] and info["searched_input_ranges"]
    with torch.no_grad():
        fp = loaded.model(held_out)
        err = {name: (m(held_out) - fp).pow(2).mean().item() for name, m in (("plain", plain), ("corrected", corrected))}
    assert err["corrected"] < err["plain"], err
