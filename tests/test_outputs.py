"""--out never deletes what dfqvit did not write, and refuses before any work starts."""
import json
import os

import pytest

from dfqvit.cli import main


@pytest.fixture
def no_synthesis(monkeypatch):
    """Fail loudly if a command gets as far as synthesis: the checks must come first."""
    import dfqvit.api

    def boom(*_a, **_k):
        raise AssertionError("synthesis started")

    monkeypatch.setattr(dfqvit.api, "synthesize_images", boom)


def _cli(capsys, *args):
    code = main(list(args))
    captured = capsys.readouterr()
    return code, captured.err.strip(), captured.out


def _quick_run(*extra):
    return ["run", "--quiet", "--method", "dfq-vit", "--iterations", "2", "--num-images", "4", "--preset", "basic",
            *extra]


def _one_line_error(code, err, pattern):
    assert code == 2 and err.startswith("dfqvit: error:") and "\n" not in err and pattern in err, err


def test_a_users_folder_is_refused_and_its_files_survive(tmp_path, capsys, no_synthesis):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "thesis.tex").write_text("years of work")
    code, err, _ = _cli(capsys, *_quick_run("--out", str(out)))
    _one_line_error(code, err, "was not written by dfqvit")
    assert (out / "thesis.tex").read_text() == "years of work" and sorted(os.listdir(out)) == ["thesis.tex"]
    code, err, _ = _cli(capsys, *_quick_run("--out", str(out), "--overwrite"))
    _one_line_error(code, err, "was not written by dfqvit")
    assert (out / "thesis.tex").is_file()


@pytest.mark.parametrize("target", [".", "..", "/", "~"])
def test_the_working_folder_its_parents_home_and_root_are_always_refused(tmp_path, capsys, monkeypatch, no_synthesis,
                                                                         target):
    work = tmp_path / "a" / "work"
    work.mkdir(parents=True)
    (work / "keep.txt").write_text("x")
    (tmp_path / "a" / "sibling.txt").write_text("y")
    monkeypatch.chdir(work)
    code, err, _ = _cli(capsys, *_quick_run("--out", target, "--overwrite"))
    _one_line_error(code, err, "working folder")
    assert (work / "keep.txt").is_file() and (tmp_path / "a" / "sibling.txt").is_file()


def test_a_folder_that_contains_the_working_folder_is_refused(tmp_path, capsys, monkeypatch, no_synthesis):
    deep = tmp_path / "a" / "b" / "c"
    deep.mkdir(parents=True)
    monkeypatch.chdir(deep)
    code, err, _ = _cli(capsys, *_quick_run("--out", str(tmp_path / "a"), "--overwrite"))
    _one_line_error(code, err, "working folder")
    assert deep.is_dir()


def test_an_existing_file_or_an_unwritable_place_fails_before_any_work(tmp_path, capsys, no_synthesis):
    f = tmp_path / "results.txt"
    f.write_text("mine")
    code, err, _ = _cli(capsys, *_quick_run("--out", str(f)))
    _one_line_error(code, err, "is an existing file")
    assert f.read_text() == "mine"
    code, err, _ = _cli(capsys, *_quick_run("--out", str(f / "sub")))
    _one_line_error(code, err, "is a file, not a folder")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results.txt"]


def test_overwrite_replaces_only_an_earlier_dfqvit_output(tmp_path, capsys):
    out = tmp_path / "out"
    assert main(_quick_run("--out", str(out))) == 0
    first = json.loads((out / "report.json").read_text())
    code, err, _ = _cli(capsys, *_quick_run("--out", str(out)))
    _one_line_error(code, err, "pass --overwrite")
    assert main(_quick_run("--out", str(out), "--overwrite", "--seed", "1")) == 0
    second = json.loads((out / "report.json").read_text())
    assert first["seed"] == 0 and second["seed"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_synthesize_and_quantize_follow_the_same_rules(tmp_path, capsys, no_synthesis):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.md").write_text("n")
    for verb in (["synthesize", "--iterations", "2", "--num-images", "4"], ["quantize", "--num-images", "4"]):
        code, err, _ = _cli(capsys, *verb, "--quiet", "--out", str(mine))
        _one_line_error(code, err, "was not written by dfqvit")
    assert sorted(os.listdir(mine)) == ["notes.md"]


def test_save_logits_creates_its_folder_prints_metrics_and_refuses_an_existing_file(tmp_path, capsys):
    target = tmp_path / "new" / "dir" / "logits.pt"
    code, _, out = _cli(capsys, "evaluate", "--quiet", "--save-logits", str(target))
    assert code == 0 and target.is_file() and json.loads(out)["top1"] > 90
    code, err, _ = _cli(capsys, "evaluate", "--quiet", "--save-logits", str(target))
    _one_line_error(code, err, "exists; pass --overwrite")
    code, err, _ = _cli(capsys, "evaluate", "--quiet", "--save-logits", str(tmp_path / "new"))
    _one_line_error(code, err, "is a folder")
