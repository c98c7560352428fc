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
    found = re.search(r"Default data-free combination: method `([^`]+)`, preset `([^`]+)`, (no ACM|ACM every (\d+) block)",
                      text)
    assert found, "README must name the default data-free combination"
    method, preset = found.group(1), found.group(2)
    every = 0 if found.group(3) == "no ACM" else int(found.group(4))
    args = apply_default_combination(build_parser().parse_args(["run"]))
    assert (args.method, args.preset, args.acm_every) == (method, preset, every)
    # naming the method gives it as published (DFQ-ViT: ACM every block)
    named = apply_default_combination(build_parser().parse_args(["run", "--method", method]))
    assert named.acm_every is None and get_method(method).acm_every == 1
