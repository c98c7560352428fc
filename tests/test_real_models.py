"""The real models of ../shared: built from --model-args and --model-config, loaded strictly.

Skipped with a reason when ../shared is absent; CI has it.
"""
from pathlib import Path

import pytest
import torch

from dfqvit.api import evaluate, load_quantized, quantize, save_quantized
from dfqvit.errors import CheckpointError, ConfigError
from dfqvit.models import load_model, load_model_config

SHARED = Path(__file__).resolve().parents[1] / ".." / "shared"
CIFAR = SHARED / "cifar10"
IMAGENET = SHARED / "imagenet"
needs_shared = pytest.mark.skipif(not (CIFAR / "models").is_dir() or not IMAGENET.is_dir(),
                                  reason="../shared (CIFAR-10 and ImageNet models) is not here")


@needs_shared
@pytest.mark.parametrize("config", ["cifar10/models/deit_tiny_cifar10.json", "cifar10/models/swin_micro_cifar10.json",
                                    "imagenet/vit_tiny_patch16_224.json"])
def test_model_configs_build_and_load_strictly(config):
    loaded = load_model_config(SHARED / config)
    assert loaded.data_config["input_size"] == ((3, 224, 224) if "imagenet" in config else (3, 32, 32))
    assert all(p.dtype == torch.float32 for p in loaded.model.parameters())  # float16 files are cast


@needs_shared
def test_model_args_build_the_cifar_deit_and_a_wrong_override_names_the_key():
    weights = CIFAR / "models" / "deit_tiny_cifar10.safetensors"
    loaded = load_model("deit_tiny_patch16_224", weights, model_args="img_size=32,patch_size=4,num_classes=10")
    assert loaded.num_classes == 10 and loaded.arch_kwargs == {"img_size": 32, "patch_size": 4, "num_classes": 10}
    with pytest.raises(CheckpointError, match="first shape mismatch: 'pos_embed'"):
        load_model("deit_tiny_patch16_224", weights, model_args="img_size=32,patch_size=8,num_classes=10")
    with pytest.raises(ConfigError, match="'patchsize' is not an argument"):
        load_model("deit_tiny_patch16_224", weights, model_args="img_size=32,patchsize=4,num_classes=10")


@needs_shared
def test_cifar_deit_from_its_config_scores_at_least_70_on_a_stratified_500_subset(tmp_path):
    loaded = load_model_config(CIFAR / "models" / "deit_tiny_cifar10.json")
    subset = tmp_path / "val500"
    for class_dir in sorted((CIFAR / "val").iterdir()):  # the first 50 files of every class
        (subset / class_dir.name).mkdir(parents=True)
        for f in sorted(class_dir.iterdir())[:50]:
            (subset / class_dir.name / f.name).symlink_to(f.resolve())
    result = evaluate(loaded.model, loaded, subset, progress=False)
    assert result["images"] == 500 and result["top1"] >= 70.0


@needs_shared
def test_an_artefact_from_a_config_loaded_model_reloads_without_the_config(tmp_path):
    loaded = load_model_config(CIFAR / "models" / "swin_micro_cifar10.json")
    calib = torch.randn(8, 3, 32, 32)
    q, _ = quantize(loaded, calib, progress=False, acm_every=2)
    path = save_quantized(q, loaded, tmp_path / "q.safetensors")
    q2, loaded2, meta = load_quantized(path)
    assert loaded2.arch_kwargs == loaded.arch_kwargs and loaded2.class_names == loaded.class_names
    assert loaded2.data_config == loaded.data_config
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(q(x), q2(x))
