"""Image folders as users have them: broken files, odd image modes, partial class sets."""
import json

import numpy as np
import pytest
from PIL import Image

from dfqvit.cli import main
from dfqvit.data.folder import ImageFolderDataset, class_index, open_rgb
from dfqvit.errors import DataError

IDENTITY = staticmethod(lambda im: im)


def _png(path, color=(10, 200, 30), size=(32, 32)):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, color).save(path)


def test_sixteen_bit_images_are_scaled_not_clipped(tmp_path):
    path = tmp_path / "deep.png"
    Image.fromarray(np.full((8, 8), 12079, dtype=np.uint16)).save(path)
    assert Image.open(path).mode.startswith("I")
    rgb = np.asarray(open_rgb(path))
    assert rgb.shape == (8, 8, 3) and abs(int(rgb[0, 0, 0]) - 47) <= 1  # 12079 / 65535 · 255 = 47.0, not 255


@pytest.mark.parametrize("mode,make,expected", [
    ("L", lambda: Image.new("L", (4, 4), 77), (77, 77, 77)),
    ("RGBA", lambda: Image.new("RGBA", (4, 4), (10, 20, 30, 255)), (10, 20, 30)),
    ("CMYK", lambda: Image.new("CMYK", (4, 4), (0, 0, 0, 0)), (255, 255, 255)),
    ("P", lambda: Image.new("RGB", (4, 4), (200, 0, 0)).convert("P", palette=Image.Palette.ADAPTIVE), (200, 0, 0)),
    ("LA", lambda: Image.new("LA", (4, 4), (90, 255)), (90, 90, 90)),
])
def test_other_modes_convert_to_the_right_rgb(tmp_path, mode, make, expected):
    im = make()
    assert im.mode == mode
    path = tmp_path / ("x.tif" if mode == "CMYK" else "x.png")
    im.save(path)
    rgb = np.asarray(open_rgb(path))
    assert rgb.shape == (4, 4, 3) and tuple(int(v) for v in rgb[0, 0]) == expected


@pytest.fixture
def hostile(tmp_path):
    """Classes 3 and 7 of a 10-class model, with three unreadable files among good ones."""
    root = tmp_path / "hostile"
    for c in ("3", "7"):
        for i in range(3):
            _png(root / c / f"{i}.png")
    (root / "3" / "notes.png").write_text("this is text, not a PNG")
    good = root / "7" / "0.png"
    (root / "7" / "cut.jpg").write_bytes(open_jpeg_bytes(tmp_path)[:300])
    (root / "7" / "._0.png").write_bytes(b"\x00\x05\x16\x07AppleDouble metadata")
    assert good.is_file()
    return root


def open_jpeg_bytes(tmp_path):
    p = tmp_path / "full.jpg"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(p, quality=90)
    return p.read_bytes()


def test_a_hostile_folder_is_refused_with_every_bad_file_listed(hostile):
    with pytest.raises(DataError) as err:
        ImageFolderDataset(hostile, IDENTITY, 10)
    msg = str(err.value)
    assert "3 unreadable image(s)" in msg and "--skip-bad-images" in msg
    for name in ("notes.png (not an image)", "cut.jpg (truncated)", "._0.png (not an image)"):
        assert name in msg


def test_skip_bad_images_keeps_the_readable_ones_and_maps_partial_classes_by_name(hostile):
    ds = ImageFolderDataset(hostile, IDENTITY, 10, skip_bad=True)
    assert len(ds) == 6 and sorted({y for _, y in ds.samples}) == [3, 7]  # not silently relabelled 0 and 1
    assert ds.skipped_report()["count"] == 3


def test_cli_skip_bad_images_reports_what_it_skipped(hostile, capsys):
    code = main(["evaluate", "--quiet", "--data", str(hostile), "--skip-bad-images"])
    out = json.loads(capsys.readouterr().out)
    assert code == 0 and out["images"] == 6 and out["skipped_images"]["count"] == 3
    assert any("cut.jpg" in f for f in out["skipped_images"]["files"])
    assert main(["evaluate", "--quiet", "--data", str(hostile)]) == 2
    err = capsys.readouterr().err.strip()
    assert "3 unreadable image(s)" in err and "\n" not in err


def test_an_empty_class_folder_is_named(tmp_path):
    _png(tmp_path / "r" / "0" / "a.png")
    (tmp_path / "r" / "1").mkdir()
    with pytest.raises(DataError, match="hold no images: 1"):
        ImageFolderDataset(tmp_path / "r", IDENTITY, 10)


def test_class_folders_map_by_name_or_are_refused():
    from pathlib import Path

    root = Path("root")
    assert class_index(["cat", "ship"], 10, root, [f"c{i}" for i in range(8)] + ["cat", "ship"]) == {"cat": 8, "ship": 9}
    with pytest.raises(DataError, match="2 class folders but the model's head has 10 classes.*--class-names"):
        class_index(["cat", "ship"], 10, root)
    with pytest.raises(DataError, match="not one of the model's classes"):
        class_index(["dog"], 3, root, ["a", "b", "c"])
    with pytest.raises(DataError, match="not a class index"):
        class_index(["3", "12"], 10, root)
    assert class_index(["b", "a", "c"], 3, root) == {"a": 0, "b": 1, "c": 2}  # all classes present: sorted order


def test_cifar_style_names_from_the_model_config_map_a_partial_folder(tmp_path):
    names = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    for c in ("cat", "truck"):
        _png(tmp_path / "p" / c / "0.png")
    ds = ImageFolderDataset(tmp_path / "p", IDENTITY, 10, class_names=names)
    assert sorted(y for _, y in ds.samples) == [3, 9]
