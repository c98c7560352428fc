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
    with pytest.raises(CheckpointError, match="cannot read"):
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
    (tmp_path / "noimg" / "a").mkdir(parents=True)
    with pytest.raises(DataError, match="no images"):
        ImageFolderDataset(tmp_path / "noimg", tf, 10)
    root = _folder(tmp_path)
    (root / "a" / "broken.jpg").write_bytes(b"\xff\xd8 garbage")
    with pytest.raises(DataError, match="unreadable image .*broken.jpg"):
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
    root = _folder(tmp_path)
    (root / "b" / "bad.png").write_bytes(b"nope")
    out = tmp_path / "out"
    code, err = _run_cli(capsys, "run", "--quiet", "--method", "noise", "--num-images", "4", "--data", str(root),
                         "--out", str(out))
    assert code == 2 and "unreadable image" in err
    assert not out.exists() and not (tmp_path / "out.partial").exists()
