"""Where dfqvit writes: checked before any work, written atomically, never over a user's files.

An output folder carries a marker file; only a folder with that marker (or an older
dfqvit output recognised by its report.json) is ever replaced, and only with
`--overwrite`. The working folder, its parents, the home folder and / are refused
outright. Everything is staged in `<out>.partial/` and moved into place on success.
"""
from __future__ import annotations

import contextlib
import fnmatch
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterator

from .errors import OutputError

MARKER = ".dfqvit-output"
PARTIAL_SUFFIX = ".partial"


def staging_dir(out: str | os.PathLike) -> Path:
    out = Path(out)
    return out.with_name(out.name + PARTIAL_SUFFIX)


def is_dfqvit_output(folder: Path) -> bool:
    """True for a folder dfqvit wrote: its marker, or (older outputs) a report.json of dfqvit's shape."""
    if (folder / MARKER).is_file():
        return True
    report = folder / "report.json"
    try:
        data = json.loads(report.read_text())
    except (OSError, ValueError):
        return False
    return isinstance(data, dict) and "model" in data and any(k in data for k in ("synthesis", "quantize", "evaluation"))


def _protected(resolved: Path) -> bool:
    cwd = Path.cwd().resolve()
    return resolved == Path(resolved.anchor) or resolved == Path.home().resolve() or resolved == cwd \
        or resolved in cwd.parents


def _check_parent_writable(resolved: Path, shown: str) -> None:
    parent = resolved.parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise OutputError(f"--out {shown}: {parent} is a file, not a folder")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise OutputError(f"--out {shown}: cannot write into {parent}")


def check_output_dir(out: str | os.PathLike, overwrite: bool = False, resume: bool = False) -> Path:
    """Refuse, with one line and before any work, every `--out` folder dfqvit must not write."""
    shown = str(out)
    resolved = Path(out).expanduser().resolve()
    if shown in (".", "..", "/", "~") or _protected(resolved):
        raise OutputError(f"--out {shown} is the working folder, one of its parents, the home folder or /; "
                          f"name a new folder for the results")
    if resolved.exists() and not resolved.is_dir():
        raise OutputError(f"--out {shown} is an existing file, not a folder")
    if resolved.is_dir() and any(resolved.iterdir()):
        if not is_dfqvit_output(resolved):
            raise OutputError(f"--out {shown} exists and was not written by dfqvit; refusing to replace it "
                              f"(name a new folder)")
        if not overwrite:
            raise OutputError(f"--out {shown} holds an earlier dfqvit output; pass --overwrite to replace it")
    stage = staging_dir(resolved)
    if stage.exists() and (not stage.is_dir() or (any(stage.iterdir()) and not (stage / MARKER).is_file())):
        raise OutputError(f"{stage} exists and was not written by dfqvit; move it away first")
    if stage.is_dir() and not resume and any(p.name != MARKER for p in stage.iterdir()) and not overwrite:
        raise OutputError(f"{stage} holds an interrupted run: pass --resume to continue it or --overwrite to start over")
    _check_parent_writable(resolved, shown)
    return resolved


def check_output_file(path: str | os.PathLike, overwrite: bool = False, what: str = "--out") -> Path:
    """The same rules for a single output file (an exported model, saved logits); creates its folder."""
    shown = str(path)
    resolved = Path(path).expanduser().resolve()
    if resolved.is_dir():
        raise OutputError(f"{what} {shown} is a folder, not a file name")
    if resolved.exists() and not overwrite:
        raise OutputError(f"{what} {shown} exists; pass --overwrite to replace it")
    _check_parent_writable(resolved, shown)
    try:
        resolved.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"{what} {shown}: cannot create {resolved.parent}: {exc.strerror}") from None
    return resolved


def write_file_atomically(path: Path, write) -> Path:
    """Call `write(tmp_path)` then move the result to `path` with the usual file mode (umask applied)."""
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(Path(tmp))
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return path


@contextlib.contextmanager
def atomic_output_dir(out: str | os.PathLike, keep_on_failure: tuple[str, ...] = (),
                      overwrite: bool = False) -> Iterator[Path]:
    """Write into `<out>.partial/` and move it to `out` only when the block succeeds.

    On failure everything is removed except files matching `keep_on_failure` (names or glob
    patterns: synthesis checkpoints and finished shards, so `--resume` can continue); `out` is
    never half-written.
    """
    out = Path(out)
    stage = staging_dir(out)
    stage.mkdir(parents=True, exist_ok=True)
    (stage / MARKER).write_text("written by dfqvit; safe for dfqvit --overwrite to replace\n")
    try:
        yield stage
    except BaseException:
        for child in stage.iterdir():
            if child.name == MARKER or any(fnmatch.fnmatch(child.name, k) for k in keep_on_failure):
                continue
            shutil.rmtree(child) if child.is_dir() else child.unlink()
        if not any(p.name != MARKER for p in stage.iterdir()):
            shutil.rmtree(stage)
        raise
    for child in list(stage.iterdir()):
        if child.suffix == ".pt" and child.name.endswith(("checkpoint.pt", ".ckpt.pt")) \
                and any(fnmatch.fnmatch(child.name, k) for k in keep_on_failure):
            child.unlink()  # checkpoints are only for resuming; a finished output has no use for them
    old = None
    if out.exists():
        if any(out.iterdir()) and (not is_dfqvit_output(out) or not overwrite):  # appeared while we worked
            raise OutputError(f"--out {out} appeared during the run and is not replaceable; results kept in {stage}")
        old = out.with_name(out.name + ".replaced")
        if old.exists():
            shutil.rmtree(old)
        os.replace(out, old)
    os.replace(stage, out)
    if old is not None:
        shutil.rmtree(old)
