"""The README states the default data-free combination; the code must run that one."""
import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


@pytest.mark.skipif(not README.is_file(), reason="README.md is not beside the tests (installed package only)")
def test_the_default_combination_is_the_one_the_readme_names():
    from dfqvit.cli import apply_default_combination, build_parser
    from dfqvit.synthesis import get_method

    text = README.read_text()
    found = re.search(r"Default data-free combination: method `([^`]+)`, (\d+) images, preset `([^`]+)`, "
                      r"(no ACM|ACM every (\d+) block)", text)
    assert found, "README must name the default data-free combination"
    method, images, preset = found.group(1), int(found.group(2)), found.group(3)
    every = 0 if found.group(4) == "no ACM" else int(found.group(5))
    args = apply_default_combination(build_parser().parse_args(["run"]))
    assert (args.method, args.num_images, args.preset, args.acm_every) == (method, images, preset, every)
    # the Python API's default combination is the same one
    from dfqvit.pipeline import default_run_options
    from dfqvit.presets import resolve_preset

    api = default_run_options()
    assert (api.method, api.synthesis.num_images, api.acm_every) == (method, images, every)
    assert api.preset == resolve_preset(preset, real_images=False)
    # naming the method gives it as published (DFQ-ViT: ACM every block, the papers' 32 images)
    named = apply_default_combination(build_parser().parse_args(["run", "--method", method]))
    assert named.acm_every is None and get_method(method).acm_every == 1 and named.num_images == 32
    assert apply_default_combination(build_parser().parse_args(["run", "--num-images", "8"])).num_images == 8


@pytest.mark.skipif(not README.is_file(), reason="README.md is not beside the tests (installed package only)")
def test_the_generated_readme_tables_equal_their_json():
    """Every `<!-- table:NAME -->` block is what benchmarks/readme_tables.py prints from the JSON."""
    import sys

    sys.path.insert(0, str(README.parent / "benchmarks"))
    try:
        import readme_tables
    finally:
        sys.path.pop(0)
    text = README.read_text()
    assert "<!-- table:lowbit -->" in text
    assert readme_tables.fill(text) == text, "run python benchmarks/readme_tables.py --fill"
