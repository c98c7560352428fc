"""Reliability, second round: what a hostile user tried, each as the behaviour it must have now.

Outputs (no user path lost to --overwrite, one run per --out, no output over an input), processes
(Ctrl-C leaves no worker), resume (checks what it continues), numbers (non-finite refused before
work), integrity (checksums that cannot be skipped), and one `dfqvit: error:` line for every
corrupt input.
"""
import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from dfqvit.cli import main

QUICK = ["--quiet", "--iterations", "2", "--num-images", "4", "--batch-size", "4", "--preset", "basic"]


def _cli(capsys, *args):
    code = main([str(a) for a in args])
    captured = capsys.readouterr()
    return code, captured.err.strip()


def _one_line(code, err, *patterns):
    assert code == 2 and err.startswith("dfqvit: error:") and "\n" not in err, err
    assert "Traceback" not in err and "weights_only" not in err, err
    for p in patterns:
        assert p in err, err


@pytest.fixture(scope="module")
def base_run(tmp_path_factory):
    """One finished run of the embedded default (noise images), to copy."""
    out = tmp_path_factory.mktemp("base") / "base"
    assert main(["run", "--method", "noise", *QUICK, "--out", str(out)]) == 0
    return out


@pytest.fixture(scope="module")
def shard_set(tmp_path_factory):
    out = tmp_path_factory.mktemp("shards") / "syn"
    assert main(["synthesize", "--quiet", "--method", "psaq-lite", "--iterations", "2", "--num-images", "8",
                 "--batch-size", "4", "--out", str(out)]) == 0
    return out


def _copy(src, dst):
    import shutil

    shutil.copytree(src, dst)
    return dst


# 1 ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["folder", "file"])
def test_overwrite_never_touches_a_sibling_named_like_dfqvits_old_scratch_name(base_run, tmp_path, capsys, kind):
    res = _copy(base_run, tmp_path / "res1")
    sibling = tmp_path / "res1.replaced"
    if kind == "folder":
        sibling.mkdir()
        (sibling / "thesis.txt").write_text("x")
    else:
        sibling.write_text("not a folder")
    for _ in range(2):  # and again: nothing left behind makes the next run fail
        code, err = _cli(capsys, "run", "--method", "noise", *QUICK, "--out", res, "--overwrite")
        assert code == 0, err
    assert (sibling / "thesis.txt").read_text() == "x" if kind == "folder" else sibling.read_text() == "not a folder"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["res1", "res1.replaced"]


# 2 ---------------------------------------------------------------------------------------------

def test_a_second_run_on_the_same_out_is_refused_and_the_first_ends_unmixed(tmp_path, capsys):
    out = tmp_path / "out"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    first = subprocess.Popen([sys.executable, "-m", "dfqvit", "run", "--quiet", "--method", "psaq-lite",
                              "--iterations", "400", "--num-images", "4", "--batch-size", "4", "--preset", "basic",
                              "--seed", "7", "--out", str(out)], env=env, stderr=subprocess.PIPE, text=True)
    lock = tmp_path / "out.dfqvit-lock"
    deadline = time.monotonic() + 120
    while not (tmp_path / "out.partial").exists() and time.monotonic() < deadline and first.poll() is None:
        time.sleep(0.1)
    assert first.poll() is None and lock.exists(), "the first run should still be working"
    code, err = _cli(capsys, "run", "--method", "noise", *QUICK, "--seed", "3", "--out", out, "--overwrite")
    _one_line(code, err, "being written by another dfqvit run")
    assert first.wait(timeout=600) == 0, first.stderr.read()[-2000:]
    report = json.loads((out / "report.json").read_text())
    assert report["seed"] == 7 and report["method"]["name"] == "psaq-lite"
    assert not lock.exists() and not (tmp_path / "out.partial").exists()
    code, err = _cli(capsys, "run", "--method", "noise", *QUICK, "--seed", "3", "--out", out, "--overwrite")
    assert code == 0, err  # the lock went with the first run


# 3 ---------------------------------------------------------------------------------------------

def _processes_mentioning(text):
    """Command lines of the live processes that mention `text` (read from /proc: no ps needed)."""
    found = []
    for proc in os.listdir("/proc"):
        if not proc.isdigit():
            continue
        try:
            with open(f"/proc/{proc}/cmdline", "rb") as f:
                args = f.read().replace(b"\0", b" ").decode(errors="replace")
            with open(f"/proc/{proc}/stat") as f:
                state = f.read().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if text in args and state != "Z":  # a zombie has ended; only its exit status is left
            found.append(f"{proc} {args}")
    return found


def test_ctrl_c_to_a_two_process_synthesis_stops_every_worker_and_leaves_it_resumable(tmp_path):
    out = tmp_path / "nproc-out"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "dfqvit", "synthesize", "--quiet", "--device", "cpu", "--method", "psaq-lite",
           "--iterations", "3000", "--checkpoint-every", "5", "--num-images", "8", "--batch-size", "4",
           "--threads", "1", "--out", str(out), "--nproc", "2"]
    parent = subprocess.Popen(cmd, env=env, stderr=subprocess.PIPE, text=True)
    stage = tmp_path / "nproc-out.partial"
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline and not list(stage.glob("shard-*.ckpt.pt")):
        time.sleep(0.2)
    assert list(stage.glob("shard-*.ckpt.pt")), "the workers never started"
    parent.send_signal(signal.SIGINT)  # to the command alone, as `kill -INT` does, not to its group
    _, err = parent.communicate(timeout=120)
    time.sleep(1.0)
    assert _processes_mentioning(str(out)) == [], "workers outlived the command"
    seen = f"exit {parent.returncode}; stage {sorted(p.name for p in stage.iterdir()) if stage.exists() else None}; " \
           f"stderr tail: {err[-1500:]}"
    assert not out.exists(), f"the set was finished after Ctrl-C ({seen})"
    assert list(stage.glob("shard-*.ckpt.pt")), f"no checkpoint left to resume ({seen})"
    resumed = subprocess.run([*cmd[:cmd.index("--iterations") + 1], "4", *cmd[cmd.index("--iterations") + 2:],
                              "--resume"], env=env, capture_output=True, text=True, timeout=600)
    # a changed --iterations is another run: refused, with advice that works
    assert resumed.returncode != 0 and "--overwrite" in resumed.stderr and "drop --resume" not in resumed.stderr
    assert _processes_mentioning(str(out)) == []


def test_ctrl_c_after_the_last_iterations_check_still_interrupts_the_synthesis():
    """A Ctrl-C that lands after the loop's last look at the flag (the final batch's last step) must not be
    dropped: the command would carry on to calibration and export as if nothing was pressed."""
    from dfqvit.synthesis.loop import _DeferredInterrupt

    before = signal.getsignal(signal.SIGINT)
    with pytest.raises(KeyboardInterrupt):
        with _DeferredInterrupt():
            os.kill(os.getpid(), signal.SIGINT)  # deferred: the handler only sets the flag
            time.sleep(0.05)
    assert signal.getsignal(signal.SIGINT) is before
    with _DeferredInterrupt() as quiet:  # no Ctrl-C, no exception
        pass
    assert not quiet.hit


# 4 ---------------------------------------------------------------------------------------------

def test_an_output_over_an_input_is_refused_and_the_input_survives(shard_set, tmp_path, capsys):
    syn = _copy(shard_set, tmp_path / "syn")
    before = sorted(p.name for p in syn.iterdir())
    for out in (syn, syn / "inside", tmp_path):
        code, err = _cli(capsys, "quantize", "--quiet", "--images", syn, "--preset", "basic", "--out", out,
                         "--overwrite")
        assert code == 2 and ("overlaps the input --images" in err or "working folder" in err), err
    assert sorted(p.name for p in syn.iterdir()) == before
    code, err = _cli(capsys, "export", "--quantized", syn / "manifest.json", "--out", syn / "manifest.json",
                     "--overwrite")
    _one_line(code, err, "overlaps the input --quantized")


# 5 ---------------------------------------------------------------------------------------------

def _interrupt_after_synthesis(monkeypatch):
    import dfqvit.api

    def boom(*_a, **_k):
        raise KeyboardInterrupt

    monkeypatch.setattr(dfqvit.api, "calibrate", boom)


def test_resume_after_an_interrupted_quantization_reuses_the_finished_images(tmp_path, capsys, monkeypatch):
    args = ["run", "--quiet", "--method", "psaq-lite", "--iterations", "3", "--num-images", "4", "--batch-size", "4",
            "--preset", "basic"]
    with monkeypatch.context() as m:
        _interrupt_after_synthesis(m)
        assert main([*args, "--out", str(tmp_path / "a")]) == 130
    capsys.readouterr()
    stage = tmp_path / "a.partial"
    assert (stage / "synthetic.pt").is_file()
    (stage / "synthesis_checkpoint.pt").unlink(missing_ok=True)  # as after an interrupt between the two
    finished = torch.load(stage / "synthetic.pt", weights_only=True)["images"]
    code, err = _cli(capsys, *args, "--out", tmp_path / "a", "--resume")
    assert code == 0, err
    report = json.loads((tmp_path / "a" / "report.json").read_text())
    assert report["synthesis"]["resumed_from"] == {"finished_images": "synthetic.pt"}
    assert torch.equal(torch.load(tmp_path / "a" / "synthetic.pt", weights_only=True)["images"], finished)
    assert main([*args, "--out", str(tmp_path / "b")]) == 0  # the same images as one uninterrupted run
    assert torch.equal(torch.load(tmp_path / "b" / "synthetic.pt", weights_only=True)["images"], finished)


@pytest.mark.parametrize("change", [["--schedule", "e2h"], ["--seed", "5"], ["--lr", "0.1"]])
def test_resume_refuses_a_checkpoint_of_other_options_with_advice_that_works(tmp_path, capsys, monkeypatch, change):
    args = ["run", "--quiet", "--method", "psaq-lite", "--iterations", "20", "--checkpoint-every", "5",
            "--num-images", "4", "--batch-size", "4", "--preset", "basic", "--out", str(tmp_path / "a")]

    def stop(batch, iteration):
        if iteration == 10:
            raise KeyboardInterrupt

    import dfqvit.synthesis.loop as loop

    real = loop.synthesize_images
    with monkeypatch.context() as m:
        m.setattr("dfqvit.api.synthesize_images", lambda *a, **k: real(*a, **k, on_iteration=stop))
        assert main(args) == 130
    capsys.readouterr()
    code, err = _cli(capsys, *args, *change, "--resume")
    _one_line(code, err, "--overwrite")
    assert "drop --resume" not in err
    code, err = _cli(capsys, *args, *change, "--overwrite")  # the advice works
    assert code == 0, err


def test_resume_refuses_other_model_weights(tiny, tmp_path):
    import copy

    from dfqvit.api import observable_copy
    from dfqvit.errors import CheckpointError
    from dfqvit.synthesis import SynthesisOptions, get_method
    from dfqvit.synthesis.loop import synthesize_images

    ckpt = tmp_path / "ckpt.pt"
    opts = SynthesisOptions(num_images=4, batch_size=2, iterations=3, checkpoint_every=1)
    method = get_method("psaq-lite")
    cfg = tiny.data_config
    synthesize_images(observable_copy(tiny.model), method, (3, 32, 32), 10, cfg["mean"], cfg["std"], opts,
                      checkpoint_path=ckpt, progress=False)
    other = copy.deepcopy(tiny.model)
    with torch.no_grad():
        other.head.bias.add_(0.01)
    with pytest.raises(CheckpointError, match="model weights"):
        synthesize_images(observable_copy(other), method, (3, 32, 32), 10, cfg["mean"], cfg["std"], opts,
                          checkpoint_path=ckpt, resume=True, progress=False)


def test_resume_refuses_finished_shards_of_another_seed(tmp_path, capsys):
    args = ["synthesize", "--quiet", "--method", "psaq-lite", "--iterations", "2", "--num-images", "8",
            "--batch-size", "4"]
    assert main([*args, "--seed", "1", "--out", str(tmp_path / "other")]) == 0
    stage = tmp_path / "s.partial"
    stage.mkdir()
    (stage / ".dfqvit-output").write_text("x")
    os.replace(tmp_path / "other" / "synthetic-00000.pt", stage / "synthetic-00000.pt")
    code, err = _cli(capsys, *args, "--seed", "2", "--out", tmp_path / "s", "--resume")
    _one_line(code, err, "synthetic-00000.pt", "another method, options, seed or model", "--overwrite")


# 6 ---------------------------------------------------------------------------------------------

def _folder(root, classes, size=32):
    from PIL import Image

    for c in classes:
        (root / c).mkdir(parents=True)
        Image.new("RGB", (size, size), (40, 90, 200)).save(root / c / "a.png")
    return root


@pytest.mark.parametrize("classes, pattern", [
    ([str(i) for i in range(1, 10)] + ["extra"], "mix class indices"),
    (["²"] + [str(i) for i in range(1, 10)], "mix class indices"),
    (["²", "b"], "class folders but the model's head has 10 classes"),
])
def test_class_folders_are_never_guessed_by_position(tmp_path, capsys, classes, pattern):
    root = _folder(tmp_path / "data", classes)
    code, err = _cli(capsys, "evaluate", "--quiet", "--data", root)
    _one_line(code, err, pattern)


# 7 ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("poison, pattern", [(float("inf"), "NaN or Inf"), (float("nan"), "NaN or Inf"),
                                             (1e6, "beyond any normalised image")])
def test_non_finite_or_absurd_images_are_refused_before_quantization(base_run, shard_set, tmp_path, capsys,
                                                                     poison, pattern):
    data = torch.load(base_run / "synthetic.pt", weights_only=True)
    data["images"][0, 0, 0, 0] = poison
    torch.save(data, tmp_path / "bad.pt")
    code, err = _cli(capsys, "quantize", "--quiet", "--images", tmp_path / "bad.pt", "--out", tmp_path / "q1")
    _one_line(code, err, pattern)
    syn = _copy(shard_set, tmp_path / "syn")
    shard = torch.load(syn / "synthetic-00001.pt", weights_only=True)
    shard["images"][1, 2, 3, 4] = poison
    torch.save(shard, syn / "synthetic-00001.pt")
    manifest = json.loads((syn / "manifest.json").read_text())
    for s in manifest["shards"]:
        s.pop("sha256")  # even without the checksum that would catch it first
    (syn / "manifest.json").write_text(json.dumps(manifest))
    code, err = _cli(capsys, "quantize", "--quiet", "--images", syn, "--out", tmp_path / "q2")
    _one_line(code, err, pattern)
    assert not (tmp_path / "q1").exists() and not (tmp_path / "q2").exists()


@pytest.mark.parametrize("args, pattern", [
    (["--lr", "inf"], "lr must be > 0 and finite"),
    (["--lr", "nan"], "lr must be > 0 and finite"),
    (["--distill-lr", "nan"], "--distill-lr must be > 0 and finite"),
    (["--distill-lr", "inf"], "--distill-lr must be > 0 and finite"),
    (["--distill-weight-lr", "nan"], "--distill-weight-lr must be >= 0 and finite"),
    (["--num-images", "0"], "--num-images must be >= 1"),
    (["--num-images", "1000000000000"], "do not fit in half of this machine's memory"),
    (["--threads", "0"], "--threads must be"),
])
def test_bad_numbers_are_refused_before_any_work(tmp_path, capsys, monkeypatch, args, pattern):
    import dfqvit.api

    monkeypatch.setattr(dfqvit.api, "synthesize_images", lambda *a, **k: pytest.fail("synthesis started"))
    code, err = _cli(capsys, "run", "--quiet", "--method", "psaq-lite", *args, "--out", tmp_path / "o")
    _one_line(code, err, pattern)
    assert not (tmp_path / "o").exists() and not (tmp_path / "o.partial").exists()


def test_quantize_refuses_a_negative_image_count(tmp_path, capsys):
    code, err = _cli(capsys, "quantize", "--quiet", "--num-images", "-5", "--out", tmp_path / "q")
    _one_line(code, err, "--num-images must be an integer >= 1, got -5")


def test_non_finite_checkpoint_weights_are_refused(tmp_path):
    import timm

    from dfqvit.errors import CheckpointError
    from dfqvit.models import load_model

    net = timm.create_model("deit_tiny_patch16_224", pretrained=False, img_size=32, patch_size=4, num_classes=10,
                            depth=1)
    state = net.state_dict()
    state["blocks.0.mlp.fc1.weight"][0, 0] = float("nan")
    torch.save(state, tmp_path / "w.pth")
    with pytest.raises(CheckpointError, match="non-finite .* blocks.0.mlp.fc1.weight"):
        load_model("deit_tiny_patch16_224", tmp_path / "w.pth",
                   model_args={"img_size": 32, "patch_size": 4, "num_classes": 10, "depth": 1})


# 8 ---------------------------------------------------------------------------------------------

def test_an_artefact_claiming_the_old_format_cannot_skip_its_checksum(base_run, tmp_path, capsys):
    from safetensors.torch import load_file, save_file
    from safetensors import safe_open

    src = base_run / "quantized.safetensors"
    with safe_open(str(src), framework="pt") as f:
        meta = json.loads(f.metadata()["dfqvit"])
    state = load_file(str(src))
    head_scale = next(k for k in state if k.startswith("model.head") and k.endswith("weight_quantizer.scale"))
    state[head_scale] = state[head_scale] * 1.5  # tampered
    for edit in ({"format": "dfqvit-quantized-v1"}, {"format_version": 1}):
        bad = {**meta, **edit}
        save_file(state, str(tmp_path / "t.safetensors"), metadata={"dfqvit": json.dumps(bad)})
        code, err = _cli(capsys, "evaluate", "--quiet", "--quantized", tmp_path / "t.safetensors")
        assert code == 2 and ("checksum mismatch" in err or "version" in err), err
    legacy = {k: v for k, v in meta.items() if k not in ("format_version",)}
    legacy["format"] = "dfqvit-quantized-v1"
    save_file(state, str(tmp_path / "t.safetensors"), metadata={"dfqvit": json.dumps(legacy)})
    code, err = _cli(capsys, "evaluate", "--quiet", "--quantized", tmp_path / "t.safetensors")
    _one_line(code, err, "edited")


def _edit_manifest(syn, fn):
    manifest = json.loads((syn / "manifest.json").read_text())
    manifest = fn(manifest)
    (syn / "manifest.json").write_text(json.dumps(manifest))


@pytest.mark.parametrize("case, pattern", [
    ("duplicate", "more than once"),
    ("copied", "same content"),
    ("dotdot", "not a shard file of this folder"),
    ("list", "no list of shards"),
    ("nofile", "not a shard file of this folder"),
    ("random", "not a shard written by `dfqvit synthesize`"),
    ("pickle", "not a shard written by `dfqvit synthesize`"),
    ("noimages", "holds no 'images' tensor"),
    ("size", "images are"),
    ("dtype", "expected a float tensor"),
    ("replaced", "checksum mismatch"),
])
def test_broken_shard_sets_are_one_line_each(shard_set, tmp_path, capsys, case, pattern):
    syn = _copy(shard_set, tmp_path / "syn")
    s1 = syn / "synthetic-00001.pt"
    if case == "duplicate":
        _edit_manifest(syn, lambda m: {**m, "shards": [m["shards"][0], m["shards"][0]]})
    elif case == "copied":
        s1.write_bytes((syn / "synthetic-00000.pt").read_bytes())
        _edit_manifest(syn, lambda m: {**m, "shards": [m["shards"][0], {**m["shards"][0], "file": s1.name}]})
    elif case == "dotdot":
        _edit_manifest(syn, lambda m: {**m, "shards": [{**m["shards"][0], "file": "../syn/synthetic-00000.pt"}]})
    elif case == "list":
        _edit_manifest(syn, lambda m: m["shards"])
    elif case == "nofile":
        _edit_manifest(syn, lambda m: {**m, "shards": [{k: v for k, v in s.items() if k != "file"}
                                                       for s in m["shards"]]})
    else:
        if case == "random":
            s1.write_bytes(os.urandom(4096))
        elif case == "pickle":
            import pickle

            import datetime

            s1.write_bytes(pickle.dumps({"images": datetime.datetime(2020, 1, 1)}))  # not a tensor type
        elif case == "noimages":
            torch.save({"targets": torch.zeros(4)}, s1)
        elif case == "size":
            torch.save({"images": torch.zeros(4, 3, 16, 16)}, s1)
        elif case == "dtype":
            torch.save({"images": torch.zeros(4, 3, 32, 32, dtype=torch.int64)}, s1)
        elif case == "replaced":
            torch.save({"images": torch.zeros(4, 3, 32, 32)}, s1)
        if case != "replaced":
            _edit_manifest(syn, lambda m: {**m, "shards": [{k: v for k, v in s.items() if k != "sha256"}
                                                           for s in m["shards"]]})
    code, err = _cli(capsys, "quantize", "--quiet", "--images", syn, "--out", tmp_path / "q")
    _one_line(code, err, pattern)


def test_exported_onnx_carries_a_checksum_that_evaluate_checks(base_run, tmp_path, capsys):
    pytest.importorskip("onnxruntime")
    import onnx

    path = tmp_path / "m.onnx"
    assert main(["export", "--quantized", str(base_run / "quantized.safetensors"), "--out", str(path)]) == 0
    model = onnx.load(str(path))
    init = next(t for t in model.graph.initializer if t.data_type == onnx.TensorProto.FLOAT and t.raw_data)
    raw = bytearray(init.raw_data)
    raw[0] ^= 0xFF
    init.raw_data = bytes(raw)
    onnx.save(model, str(tmp_path / "edited.onnx"))
    code, err = _cli(capsys, "evaluate", "--quiet", "--onnx", tmp_path / "edited.onnx")
    _one_line(code, err, "checksum mismatch")
    for props, pattern in (({"dfqvit": "{not json"}, "metadata is not valid"),
                           ({"dfqvit": json.dumps([1, 2])}, "metadata is not valid")):
        model = onnx.load(str(path))
        onnx.helper.set_model_props(model, props)
        onnx.save(model, str(tmp_path / "meta.onnx"))
        code, err = _cli(capsys, "evaluate", "--quiet", "--onnx", tmp_path / "meta.onnx")
        _one_line(code, err, pattern)
    capsys.readouterr()
    assert main(["evaluate", "--quiet", "--onnx", str(path)]) == 0


# 9 ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("content", [b"", os.urandom(300), b"truncated", None])
def test_a_broken_synthesis_checkpoint_with_resume_is_one_line(tmp_path, capsys, content):
    stage = tmp_path / "a.partial"
    stage.mkdir()
    (stage / ".dfqvit-output").write_text("x")
    ckpt = stage / "synthesis_checkpoint.pt"
    if content is None:
        torch.save({"images": torch.zeros(4, 3, 32, 32)}, ckpt)  # missing keys
    elif content == b"truncated":
        torch.save({"identity": {}, "images": torch.zeros(64, 3, 32, 32)}, ckpt)
        ckpt.write_bytes(ckpt.read_bytes()[:5000])
    else:
        ckpt.write_bytes(content)
    code, err = _cli(capsys, "run", "--quiet", "--method", "psaq-lite", "--iterations", "2", "--num-images", "4",
                     "--out", tmp_path / "a", "--resume")
    _one_line(code, err, "synthesis checkpoint", "--overwrite")


def test_odd_out_paths_are_one_line(tmp_path, capsys):
    code, err = _cli(capsys, "run", "--method", "noise", *QUICK, "--out", tmp_path / ("x" * 300))
    _one_line(code, err, "too long")
    code, err = _cli(capsys, "run", "--method", "noise", *QUICK, "--out", tmp_path / ("y" * 250))
    _one_line(code, err, "the name is too long")
    (tmp_path / "dangling").symlink_to(tmp_path / "nowhere" / "x")
    code, err = _cli(capsys, "run", "--method", "noise", *QUICK, "--out", tmp_path / "dangling")
    _one_line(code, err, "does not exist")


def test_a_decompression_bomb_is_skipped_with_a_reason_or_refused(tmp_path, capsys, monkeypatch):
    from PIL import Image

    root = _folder(tmp_path / "data", [str(i) for i in range(10)])
    Image.new("RGB", (400, 400)).save(root / "3" / "bomb.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 10_000)  # 400² is over twice the guard: refused by PIL
    code, err = _cli(capsys, "evaluate", "--quiet", "--data", root)
    _one_line(code, err, "bomb.png (too large")
    code = main(["evaluate", "--quiet", "--data", str(root), "--skip-bad-images"])
    out = capsys.readouterr().out
    assert code == 0 and "bomb.png (too large" in out


def test_ctrl_c_at_any_moment_of_start_up_is_one_line(tmp_path):
    """From dfqvit's first line on (the interpreter's own ~30 ms of start-up before it are Python's)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    import signal as sig

    assert sig.getsignal(sig.SIGINT) is sig.default_int_handler  # importing dfqvit changed nothing here
    for delay in (0.15, 0.3, 0.6, 1.0, 1.5, 2.5, 4.0):
        proc = subprocess.Popen([sys.executable, "-m", "dfqvit", "run", "--method", "noise", *QUICK,
                                 "--out", str(tmp_path / f"o{delay}")], env=env, stderr=subprocess.PIPE, text=True)
        time.sleep(delay)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=120)
        assert "Traceback" not in err, (delay, err[-1500:])


# 10 --------------------------------------------------------------------------------------------

def test_the_readme_usage_line_builds_its_data_config_from_the_model(tmp_path):
    import timm

    from dfqvit.models import load_model

    args = {"img_size": 32, "patch_size": 4, "num_classes": 10, "depth": 2}
    net = timm.create_model("deit_tiny_patch16_224", pretrained=False, **args)
    from safetensors.torch import save_file

    save_file(net.state_dict(), str(tmp_path / "w.safetensors"))
    loaded = load_model("deit_tiny_patch16_224", tmp_path / "w.safetensors",
                        model_args="img_size=32,patch_size=4,num_classes=10,depth=2")
    assert loaded.data_config["input_size"] == (3, 32, 32)
    assert main(["synthesize", "--quiet", "--model", "deit_tiny_patch16_224", "--model-args",
                 "img_size=32,patch_size=4,num_classes=10,depth=2", "--checkpoint", str(tmp_path / "w.safetensors"),
                 "--method", "psaq-lite", "--iterations", "1", "--num-images", "2", "--out", str(tmp_path / "s")]) == 0


# 11 --------------------------------------------------------------------------------------------

def test_quantize_names_the_calibration_images_it_skipped(tmp_path, capsys):
    root = _folder(tmp_path / "data", [str(i) for i in range(10)])
    (root / "4" / "broken.png").write_bytes(b"not a png")
    code = main(["quantize", "--quiet", "--calib-data", str(root), "--num-images", "4", "--preset", "basic",
                 "--skip-bad-images", "--out", str(tmp_path / "q")])
    err = capsys.readouterr().err
    assert code == 0 and "broken.png" in err
    report = json.loads((tmp_path / "q" / "report.json").read_text())
    assert report["skipped_calibration_images"]["files"] == ["4/broken.png (not an image)"]


def test_a_truncated_artefact_is_called_truncated(base_run, tmp_path, capsys):
    data = (base_run / "quantized.safetensors").read_bytes()
    (tmp_path / "cut.safetensors").write_bytes(data[: len(data) // 2])
    code, err = _cli(capsys, "evaluate", "--quiet", "--quantized", tmp_path / "cut.safetensors")
    _one_line(code, err, "truncated or corrupt")


def test_a_failing_export_creates_no_folders(tmp_path, capsys):
    code, err = _cli(capsys, "export", "--quantized", tmp_path / "missing.safetensors", "--out",
                     tmp_path / "a" / "b" / "x.onnx")
    _one_line(code, err, "not found")
    assert not (tmp_path / "a").exists()


def test_a_newline_in_a_file_name_cannot_forge_a_second_error_line(tmp_path, capsys):
    evil = tmp_path / "x\ndfqvit: error: all good"
    code, err = _cli(capsys, "evaluate", "--quiet", "--quantized", evil)
    _one_line(code, err, "\\n")
    assert err.count("dfqvit: error:") == 2 and len(err.splitlines()) == 1


def test_output_into_an_empty_user_folder_keeps_its_mode(tmp_path, capsys):
    out = tmp_path / "mine"
    out.mkdir()
    os.chmod(out, 0o750)
    code, err = _cli(capsys, "run", "--method", "noise", *QUICK, "--out", out)
    assert code == 0, err
    assert (out.stat().st_mode & 0o777) == 0o750 and (out / "report.json").is_file()


# 13 --------------------------------------------------------------------------------------------

def test_equal_threads_give_the_same_set_whatever_the_process_count(tmp_path):
    from dfqvit.synthesis.sharded import load_shards, read_manifest

    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
    base = [sys.executable, "-m", "dfqvit", "synthesize", "--quiet", "--device", "cpu", "--method", "psaq",
            "--iterations", "4", "--num-images", "8", "--batch-size", "4", "--threads", "1"]
    one = subprocess.run([*base, "--out", str(tmp_path / "one")], env=env, capture_output=True, text=True, timeout=600)
    two = subprocess.run([*base, "--out", str(tmp_path / "two"), "--nproc", "2"], env=env, capture_output=True,
                         text=True, timeout=600)
    assert one.returncode == 0 and two.returncode == 0, (one.stderr[-1500:], two.stderr[-1500:])
    assert torch.equal(load_shards(tmp_path / "one"), load_shards(tmp_path / "two"))
    assert read_manifest(tmp_path / "one")["threads_per_process"] == 1
    assert read_manifest(tmp_path / "two")["threads_per_process"] == 1
