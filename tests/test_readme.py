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
    assert api.preset == resolve_preset(preset, real_images=False, w_bits=api.quant.w_bits, a_bits=api.quant.a_bits)
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
    text = (README.parent / "docs" / "results.md").read_text()
    assert "<!-- table:lowbit -->" in text
    assert readme_tables.fill(text) == text, "run python -m benchmarks report"


DOCS = README.parent / "docs"
SETUP = ('python3 -m venv .venv && . .venv/bin/activate && pip install torch==2.14.1 torchvision==0.29.1 && '
         'pip install -e ".[test]" && dfqvit run')
TESTS = "python -m pytest -q tests"


def _documents() -> list[Path]:
    return [README, *sorted(DOCS.glob("*.md"))]


@pytest.mark.skipif(not README.is_file(), reason="README.md is not beside the tests (installed package only)")
def test_readme_is_short_and_starts_with_the_two_fresh_machine_commands():
    text = README.read_text()
    assert len(text.splitlines()) <= 250
    first_block = re.search(r"```bash\n(.*?)```", text, flags=re.S).group(1)
    commands = [line for line in first_block.splitlines() if line and not line.startswith("#")]
    assert commands == [SETUP, TESTS]
    ci = (README.parent / ".ci" / "run").read_text()
    assert TESTS in ci and re.search(r'pip install (-q )?-e "\.\[test\]"', ci)  # CI installs and tests as the README says
    for page in ("results", "methods", "quantizer", "deploy", "scale", "reliability", "reproduce"):
        assert (DOCS / f"{page}.md").is_file() and f"docs/{page}.md" in text


@pytest.mark.skipif(not README.is_file(), reason="README.md is not beside the tests (installed package only)")
def test_headline_and_docs_tables_equal_their_json():
    """Every generated block of README.md and docs/*.md (the headline table included) is what
    `python -m benchmarks report` makes from benchmarks/results/ now."""
    import sys

    sys.path.insert(0, str(README.parent / "benchmarks"))
    try:
        import readme_tables
    finally:
        sys.path.pop(0)
    assert "<!-- table:headline -->" in README.read_text()
    for doc in _documents():
        text = doc.read_text()
        assert readme_tables.fill(text) == text, f"{doc.name}: run python -m benchmarks report"


def _shown_commands(text: str) -> list[str]:
    """Command lines inside ```bash blocks and inline `...` spans that start with dfqvit or
    python -m benchmarks (continuation lines joined, comments and && chains split)."""
    import shlex

    found = []
    for block in re.findall(r"```(?:bash)?\n(.*?)```", text, flags=re.S):
        block = block.replace("\\\n", " ")
        for line in block.splitlines():
            found += [c.strip() for c in line.split("#")[0].split("&&")]
    found += [c.strip() for span in re.findall(r"`([^`\n]+)`", text) for c in span.split("&&")]
    out = []
    for c in found:
        c = re.sub(r"^.*?-m dfqvit ", "dfqvit ", c) if "torchrun" in c else c
        if c.startswith(("dfqvit ", "python -m benchmarks ")) or c == "dfqvit":
            try:
                shlex.split(c)
            except ValueError:
                continue
            out.append(c)
    return out


def _clean(tokens: list[str]) -> list[str]:
    """Drop the placeholders docs use: '...', '[--opt a|b]' → '--opt a', 'a|b' → 'a'."""
    out = []
    for t in tokens:
        if t in ("...", "…") or t.startswith("<"):
            continue
        t = t.strip("[]")
        if "|" in t and not t.startswith("--"):
            t = t.split("|")[0]
        out.append(t)
    return out


@pytest.mark.skipif(not README.is_file(), reason="README.md is not beside the tests (installed package only)")
def test_every_command_shown_parses_with_todays_cli():
    """Each dfqvit command shown in README.md and docs/ names a command and options that exist
    today (a --help-level check: nothing runs); each python -m benchmarks names a table."""
    import argparse
    import shlex
    import sys

    from dfqvit.cli import build_parser

    sys.path.insert(0, str(README.parent))
    try:
        from benchmarks.__main__ import TABLES
    finally:
        sys.path.pop(0)
    parser = build_parser()
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices
    checked = 0
    for doc in _documents():
        for command in _shown_commands(doc.read_text()):
            tokens = _clean(shlex.split(command))
            if tokens[:3] == ["python", "-m", "benchmarks"]:
                assert tokens[3:4] in ([], *([t] for t in (*TABLES, "list", "report"))), f"{doc.name}: {command}"
                continue
            if len(tokens) == 1 or tokens[1].startswith("--"):
                assert all(t in parser._option_string_actions for t in tokens[1:]), f"{doc.name}: `{command}`"
                continue  # `dfqvit` alone, `dfqvit --version`
            assert tokens[1] in commands, f"{doc.name}: `{command}`: no command {tokens[1]!r}"
            known = commands[tokens[1]]._option_string_actions
            for t in tokens[2:]:
                flag = t.split("=")[0]
                if flag.startswith("--"):
                    assert flag in known, f"{doc.name}: `{command}`: {tokens[1]} has no option {flag}"
            checked += 1
    assert checked >= 20
