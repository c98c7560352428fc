"""The README states the default data-free combination; the code must run that one."""
import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


@pytest.mark.skipif(not README.is_file(), reason="README.md is not beside the tests (installed package only)")
def test_the_default_combination_is_the_one_the_readme_names():
    from dfqvit.cli import build_parser
    from dfqvit.synthesis import get_method

    text = README.read_text()
    found = re.search(r"Default data-free combination: method `([^`]+)`, preset `([^`]+)`, ACM every (\d+) block", text)
    assert found, "README must name the default data-free combination"
    method, preset, every = found.group(1), found.group(2), int(found.group(3))
    args = build_parser().parse_args(["run"])
    assert (args.method, args.preset) == (method, preset)
    assert args.acm_every is None and get_method(method).acm_every == every  # the method's own ACM applies
