import re

import pytest
import torch
from PIL import Image

from dfqvit.cli import main
from dfqvit.data.folder import ImageFolderDataset, eval_transform
from dfqvit.errors import CheckpointError, DataError, UnknownModelError
from dfqvit.models import load_model


def _run_cli(capsys, *args):
    code = main(list(args))
    err = capsys.readouterr().err.strip()
    return code, err


def test_unknown_model():
    with pytest.raises(UnknownModelError, match="unknown model 'deit_huge_nonsense'"):
        load_model("deit_huge_nonsense")


def test_missing_checkpoint_tells_user_to_pass_one(tmp_path):
    with pytest.raises(CheckpointError, match="--checkpoint"):
        load_model("deit_tiny_patch16_224")
    with pytest.raises(CheckpointError, match="not found"):
        load_model("deit_tiny_patch16_224", tmp_path / "nope.pth")


def test_corrupt_and_mismatching_checkpoints(tmp_path):
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"not a checkpoint at all")
    with pytest.raises(CheckpointError, match="not a readable weights file"):
        load_model("deit_tiny_patch16_224", bad)
    wrong = tmp_path / "wrong.pth"
    torch.save({"foo": torch.zeros(3)}, wrong)
    with pytest.raises(CheckpointError, match="does not fit"):
        load_model("deit_tiny_patch16_224", wrong)


def test_local_checkpoint_loads_with_weights_only(tmp_path):
    import timm

    net = timm.create_model("deit_tiny_patch16_224", pretrained=False)
    path = tmp_path / "deit.pth"
    torch.save({"model": net.state_dict()}, path)
    loaded = load_model("deit_tiny_patch16_224", path)
    assert torch.equal(loaded.model.head.weight, net.head.weight) and loaded.data_config["input_size"] == (3, 224, 224)


def _folder(tmp_path, classes=("a", "b"), per=2):
    root = tmp_path / "imgs"
    for c in classes:
        (root / c).mkdir(parents=True)
        for i in range(per):
            Image.new("RGB", (40, 40), (i * 50, 100, 150)).save(root / c / f"{i}.png")
    return root


def test_folder_errors(tmp_path, tiny):
    tf = eval_transform(tiny.data_config)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no class sub-folders"):
        ImageFolderDataset(tmp_path / "empty", tf, 10)
    (tmp_path / "noimg" / "0").mkdir(parents=True)
    with pytest.raises(DataError, match="no images"):
        ImageFolderDataset(tmp_path / "noimg", tf, 10)
    root = _folder(tmp_path, classes=("0", "1"))
    (root / "0" / "broken.jpg").write_bytes(b"\xff\xd8 garbage")
    with pytest.raises(DataError, match="1 unreadable image.*broken.jpg"):
        ImageFolderDataset(root, tf, 10)
    many = _folder(tmp_path / "m", classes=[f"c{i:02d}" for i in range(11)], per=1)
    with pytest.raises(DataError, match="11 class folders but the model's head has 10"):
        ImageFolderDataset(many, tf, 10)
    syn = _folder(tmp_path / "s", classes=("n01440764",), per=1)
    with pytest.raises(DataError, match="1000-class head"):
        ImageFolderDataset(syn, tf, 10)


def test_folder_maps_synsets_to_imagenet_indices(tmp_path):
    root = _folder(tmp_path, classes=("n01443537", "n01440764"), per=1)
    ds = ImageFolderDataset(root, lambda im: im, 1000)
    assert sorted({y for _, y in ds.samples}) == [0, 1]


@pytest.mark.parametrize("args,pattern", [
    (["--model", "not_a_model"], "unknown model"),
    (["--model", "deit_tiny_patch16_224"], "--checkpoint"),
    (["--w-bits", "9"], "weight bits must be an integer in 2..8"),
    (["--a-bits", "1"], "activation bits must be an integer in 2..8"),
])
def test_cli_bad_input_is_one_line_nonzero_and_leaves_no_output(tmp_path, capsys, args, pattern):
    out = tmp_path / "out"
    code, err = _run_cli(capsys, "run", "--quiet", "--iterations", "2", "--out", str(out), *args)
    assert code == 2 and err.startswith("dfqvit: error:") and pattern in err and "\n" not in err
    assert not out.exists() and not (tmp_path / "out.partial").exists()


def test_cli_bad_eval_folder_leaves_nothing_half_written(tmp_path, capsys):
    root = _folder(tmp_path, classes=("0", "1"))
    (root / "1" / "bad.png").write_bytes(b"nope")
    out = tmp_path / "out"
    code, err = _run_cli(capsys, "run", "--quiet", "--method", "noise", "--num-images", "4", "--data", str(root),
                         "--out", str(out))
    assert code == 2 and "1 unreadable image(s)" in err
    assert not out.exists() and not (tmp_path / "out.partial").exists()


@pytest.mark.parametrize("content,pattern", [
    (b"", "is empty (0 bytes)"),
    (b"hello, this is a text file\n" * 4, "not a readable weights file"),
])
def test_cryptic_checkpoints_get_clear_messages(tmp_path, content, pattern):
    path = tmp_path / "w.pth"
    path.write_bytes(content)
    with pytest.raises(CheckpointError, match=pattern.replace("(", r"\(").replace(")", r"\)")):
        load_model("deit_tiny_patch16_224", path)
    with pytest.raises(CheckpointError, match="is a directory"):
        load_model("deit_tiny_patch16_224", tmp_path)


def test_a_wrong_model_checkpoint_names_missing_keys_and_the_first_shape_mismatch(tmp_path):
    import timm

    small = timm.create_model("deit_tiny_patch16_224", pretrained=False, img_size=32, patch_size=4, num_classes=10,
                              depth=2)
    path = tmp_path / "small.pth"
    torch.save(small.state_dict(), path)
    with pytest.raises(CheckpointError) as err:
        load_model("deit_tiny_patch16_224", path)
    msg = str(err.value)
    assert "missing keys (blocks.2." in msg and "first shape mismatch: 'pos_embed' is (1, 65, 192) in the file" in msg


@pytest.fixture
def no_synthesis(monkeypatch):
    import dfqvit.api

    def boom(*_a, **_k):
        raise AssertionError("synthesis started")

    monkeypatch.setattr(dfqvit.api, "synthesize_images", boom)


@pytest.mark.parametrize("args,pattern", [
    (["--acm-every", "-1"], "--acm-every must be >= 0"),
    (["--gradient-tilt", "-1"], "--gradient-tilt must be in [0, 4]"),
    (["--gradient-tilt", "nan"], "--gradient-tilt must be in [0, 4]"),
    (["--chroma-scale", "0"], "each in (0, 1]"),
    (["--chroma-scale", "1.5"], "each in (0, 1]"),
    (["--chroma-scale", "nan"], "each in (0, 1]"),
    (["--chroma-scale", "0.3,0"], "got 0.3 red-blue, 0 green-magenta"),
    (["--checkpoint-every", "0"], "checkpoint-every must be >= 1"),
    (["--distill-lr", "-1"], "--distill-lr must be > 0"),
    (["--distill-steps", "-5"], "--distill-steps must be >= 0"),
    (["--reconstruct-steps", "-2"], "--reconstruct-steps must be >= 0"),
    (["--device", "tpu"], "--device must be cpu, cuda, cuda:N or auto"),
    (["--device", "mps"], "--device must be cpu, cuda, cuda:N or auto"),
    (["--out", "."], "working folder"),
    (["--method", "noise", "--resume"], "nothing to resume"),
    (["--data", "/no/such/folder"], "folder not found"),
    (["--model-args", "img_size=32"], "--model-args needs --model"),
    (["--model", "deit_tiny_patch16_224", "--model-args", "img_sz=32", "--checkpoint", "x.pth"],
     "'img_sz' is not an argument"),
])
def test_bad_values_fail_before_any_work(tmp_path, capsys, monkeypatch, no_synthesis, args, pattern):
    monkeypatch.chdir(tmp_path)
    code, err = _run_cli(capsys, "run", "--quiet", "--iterations", "2", *args)
    assert code == 2 and err.startswith("dfqvit: error:") and pattern in err and "\n" not in err, err
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("value", ["0.3,x", "0.3,0.2,0.1"])
def test_a_malformed_chroma_scale_is_refused_by_the_parser(capsys, value):
    with pytest.raises(SystemExit) as stop:  # argparse's own usage error, as for any malformed option
        main(["run", "--chroma-scale", value])
    err = capsys.readouterr().err
    assert stop.value.code == 2 and "expected a number or two (red-blue,green-magenta)" in err


@pytest.mark.parametrize("payload,pattern", [
    ({"targets": torch.zeros(2)}, "holds no 'images' tensor"),
    ("text", "is not a synthetic.pt"),
    ({"images": torch.zeros(2, 3, 64, 64)}, "images are (3, 64, 64), the model takes (3, 32, 32)"),
])
def test_quantize_checks_the_images_file(tmp_path, capsys, payload, pattern):
    path = tmp_path / "syn.pt"
    if payload == "text":
        path.write_text("not a tensor file")
    else:
        torch.save(payload, path)
    out = tmp_path / "q"
    code, err = _run_cli(capsys, "quantize", "--quiet", "--images", str(path), "--out", str(out))
    assert code == 2 and pattern in err and "\n" not in err, err
    assert not out.exists() and not (tmp_path / "q.partial").exists()


def test_cli_basics_version_models_and_defaults_in_help(capsys):
    from dfqvit import __version__

    with pytest.raises(SystemExit):
        main(["--version"])
    assert __version__ in capsys.readouterr().out
    assert main(["models"]) == 0
    listing = capsys.readouterr().out
    assert "vit_tiny_patch16_224" in listing and "img_size=32,patch_size=2,window_size=4" in listing
    with pytest.raises(SystemExit):
        main(["run", "--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    for option, default in (("--num-images", "32, the papers'; 128 for `run` without --method and for real images under strong+recon"), ("--iterations", "500"), ("--lr", "0.2"), ("--out", "dfqvit-out"),
                            ("--seed", "0"), ("--preset", "auto"), ("--method", "dfq-vit-natural")):
        entry = rf"{option} [A-Z_{{}},+\-a-z0-9]+ (?:(?! --[a-z]).)*?\(default: {re.escape(default)}\)"  # its own entry
        assert re.search(entry, help_text), option


def test_the_report_records_a_resumed_run(tmp_path, capsys, monkeypatch):
    import json

    from dfqvit.synthesis import loop

    out = tmp_path / "out"
    calls = {"n": 0}
    original = loop.synthesize_images

    def interrupt_once(*a, **k):
        if calls["n"] == 0:
            calls["n"] += 1
            k["on_iteration"] = lambda b, it: (_ for _ in ()).throw(KeyboardInterrupt) if it == 3 else None
        return original(*a, **k)

    import dfqvit.api

    monkeypatch.setattr(dfqvit.api, "synthesize_images", interrupt_once)
    args = ["run", "--quiet", "--preset", "basic", "--iterations", "6", "--num-images", "4", "--checkpoint-every", "2",
            "--out", str(out)]
    assert main(args) == 130
    assert main(args) == 2 and "pass --resume" in capsys.readouterr().err
    assert main(args + ["--resume"]) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["synthesis"]["resumed_from"] == {"batch": 0, "iteration": 3}
