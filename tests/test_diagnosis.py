import json

from dfqvit.api import synthesize
from dfqvit.diagnosis import compare_calibration
from dfqvit.synthesis import SynthesisOptions


def test_the_diagnosis_ranks_noise_farther_from_real_images_than_dfq_vit(tiny):
    opts = SynthesisOptions(num_images=32, iterations=40, seed=0)
    images = {name: synthesize(tiny, name, opts, progress=False).images for name in ("real", "dfq-vit", "noise")}
    result = compare_calibration(tiny, images)
    s = result["summary"]
    assert s["noise"]["channel_mean"] > s["dfq-vit"]["channel_mean"]
    assert s["noise"]["acm_cosine"] < s["dfq-vit"]["acm_cosine"]
    assert len(result["per_block"]["dfq-vit"]) == 4 and len(result["worst_blocks"]["noise"]) == 3


def test_cli_compare_calibration_writes_a_table_and_a_plot(tmp_path, capsys):
    from dfqvit.cli import main

    out = tmp_path / "diag"
    assert main(["compare-calibration", "--quiet", "--iterations", "5", "--num-images", "8", "--sources", "noise",
                 "--preset", "basic", "--out", str(out)]) == 0
    assert (out / "diagnosis.png").stat().st_size > 10_000
    report = json.loads((out / "report.json").read_text())
    assert set(report["diagnosis"]["summary"]) == {"noise"}
    assert "| noise |" in (out / "report.md").read_text()
