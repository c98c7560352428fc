"""Where dfqvit writes: checked before any work, written atomically, never over a user's files.

An output folder carries a marker file; only a folder with that marker (or an older
dfqvit output recognised by its report.json) is ever replaced, and only with
`--overwrite`. The working folder, its parents, the home folder and / are refused
outright, and so is an output that is, contains or lies inside one of the command's inputs.
Everything is staged in `<out>.partial/` and moved into place on success; the folder it
replaces is first moved to a fresh hidden name of dfqvit's own, so no other path is touched.

One run at a time per output: the check takes an exclusive lock (`<out>.dfqvit-lock`,
flock(2), released when the run ends or its process dies); a second run on the same `--out`
is refused at once instead of mixing its files into the first one's staging folder.
"""
from __future__ import annotations

import contextlib
import fnmatch
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterable, Iterator

from .errors import OutputError

MARKER = ".dfqvit-output"
PARTIAL_SUFFIX = ".partial"
LOCK_SUFFIX = ".dfqvit-lock"
NAME_MAX = 255
_LOCKS: dict[Path, int] = {}  # resolved --out → the open, locked file descriptor of its lock file


def printable(value: object) -> str:
    """A path or value as one line: control characters (a newline in a file name) escaped."""
    text = str(value)
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in text)


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


def _resolve(out: str | os.PathLike, what: str) -> Path:
    """The absolute path of `out`, or one line on why it cannot be one (too long, a dangling link)."""
    shown = printable(out)
    path = Path(out).expanduser()
    try:
        if path.is_symlink() and not path.exists():
            raise OutputError(f"{what} {shown} is a link to {printable(os.readlink(path))}, which does not exist; "
                              f"name a real folder")
        resolved = path.resolve()
        resolved.exists()
    except OSError as exc:
        raise OutputError(f"{what} {shown}: {exc.strerror or exc}") from None
    if len(resolved.name.encode()) + max(len(PARTIAL_SUFFIX), len(LOCK_SUFFIX)) > NAME_MAX:
        raise OutputError(f"{what} {shown}: the name is too long (at most {NAME_MAX - len(LOCK_SUFFIX)} bytes)")
    return resolved


def _overlaps(a: Path, b: Path) -> bool:
    return a == b or a in b.parents or b in a.parents


def check_inputs_apart(out: Path, inputs: Iterable[tuple[str, str | os.PathLike | None]], shown: str,
                       what: str = "--out") -> None:
    """Refuse an output that is, contains or lies inside an input: replacing it would destroy the input."""
    for option, value in inputs:
        if value is None:
            continue
        try:
            src = Path(value).expanduser().resolve()
        except OSError:
            continue  # the input's own check reports it
        for target in (out, staging_dir(out)):
            if _overlaps(target, src):
                raise OutputError(f"{what} {shown} overlaps the input {option} {printable(value)}: writing there "
                                  f"would replace the input; name a separate output")


def lock_output(resolved: Path, shown: str) -> None:
    """Take `<out>.dfqvit-lock` for this process (re-entrant), or refuse: another run writes there."""
    import fcntl

    if resolved in _LOCKS:
        return
    lock = resolved.with_name(resolved.name + LOCK_SUFFIX)
    for _ in range(3):  # a lock file removed by the run that held it between our open and our lock: retry
        try:
            fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise OutputError(f"--out {shown}: cannot create its lock file {printable(lock)}: {exc.strerror}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            raise OutputError(f"--out {shown} is being written by another dfqvit run (lock {printable(lock)}); "
                              f"wait for it to finish or choose another --out") from None
        try:
            same = os.fstat(fd).st_ino == os.stat(lock).st_ino
        except FileNotFoundError:
            same = False
        if same:
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()}\n".encode())
            _LOCKS[resolved] = fd
            return
        os.close(fd)
    raise OutputError(f"--out {shown}: could not take its lock {printable(lock)}")


def release_output(out: str | os.PathLike | None = None) -> None:
    """Drop the lock of `out` (every lock this process holds when None) and remove its lock file."""
    targets = list(_LOCKS) if out is None else [Path(out).expanduser().resolve()]
    for resolved in targets:
        fd = _LOCKS.pop(resolved, None)
        if fd is None:
            continue
        with contextlib.suppress(OSError):
            os.unlink(resolved.with_name(resolved.name + LOCK_SUFFIX))
        os.close(fd)


def check_output_dir(out: str | os.PathLike, overwrite: bool = False, resume: bool = False,
                     inputs: Iterable[tuple[str, str | os.PathLike | None]] = (), lock: bool = True) -> Path:
    """Refuse, with one line and before any work, every `--out` folder dfqvit must not write;
    then take its lock (see the module docstring) unless `lock` is False."""
    shown = printable(out)
    resolved = _resolve(out, "--out")
    if str(out) in (".", "..", "/", "~") or _protected(resolved):
        raise OutputError(f"--out {shown} is the working folder, one of its parents, the home folder or /; "
                          f"name a new folder for the results")
    check_inputs_apart(resolved, inputs, shown)
    if resolved.exists() and not resolved.is_dir():
        raise OutputError(f"--out {shown} is an existing file, not a folder")
    if resolved.is_dir() and any(resolved.iterdir()):
        if not is_dfqvit_output(resolved):
            raise OutputError(f"--out {shown} exists and was not written by dfqvit; refusing to replace it "
                              f"(name a new folder)")
        if not overwrite:
            raise OutputError(f"--out {shown} holds an earlier dfqvit output; pass --overwrite to replace it")
    _check_parent_writable(resolved, shown)
    if lock:
        lock_output(resolved, shown)
    stage = staging_dir(resolved)
    if stage.is_symlink() or (stage.exists() and (not stage.is_dir() or (any(stage.iterdir())
                                                                         and not (stage / MARKER).is_file()))):
        raise OutputError(f"{printable(stage)} exists and was not written by dfqvit; move it away first")
    if stage.is_dir() and not resume and any(p.name != MARKER for p in stage.iterdir()) and not overwrite:
        raise OutputError(f"{printable(stage)} holds an interrupted run: pass --resume to continue it or "
                          f"--overwrite to start over")
    return resolved


def check_output_file(path: str | os.PathLike, overwrite: bool = False, what: str = "--out",
                      inputs: Iterable[tuple[str, str | os.PathLike | None]] = ()) -> Path:
    """The same rules for a single output file (an exported model, saved logits). Its folder is
    created only when the file is written (`write_file_atomically`), so a failing command leaves none."""
    shown = printable(path)
    resolved = _resolve(path, what)
    check_inputs_apart(resolved, inputs, shown, what)
    if resolved.is_dir():
        raise OutputError(f"{what} {shown} is a folder, not a file name")
    if resolved.exists() and not overwrite:
        raise OutputError(f"{what} {shown} exists; pass --overwrite to replace it")
    _check_parent_writable(resolved, shown)
    return resolved


def make_parent(path: Path, what: str = "--out") -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"{what} {printable(path)}: cannot create {printable(path.parent)}: {exc.strerror}") from None


def write_file_atomically(path: Path, write) -> Path:
    """Call `write(tmp_path)` then move the result to `path` with the usual file mode (umask applied)."""
    make_parent(path)
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
                      overwrite: bool = False, resume: bool = False) -> Iterator[Path]:
    """Write into `<out>.partial/` and move it to `out` only when the block succeeds.

    On failure everything is removed except files matching `keep_on_failure` (names or glob
    patterns: synthesis checkpoints and finished shards, so `--resume` can continue); `out` is
    never half-written. Without `resume`, what an earlier interrupted run left in the staging
    folder is cleared first, so none of it can end up beside this run's results.
    """
    out = Path(out)
    lock_output(_resolve(out, "--out"), printable(out))  # no-op when check_output_dir took it
    stage = staging_dir(out)
    if stage.is_dir() and not resume and (stage / MARKER).is_file():
        shutil.rmtree(stage)
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
        release_output(out)
        raise
    for child in list(stage.iterdir()):
        if child.suffix == ".pt" and child.name.endswith(("checkpoint.pt", ".ckpt.pt")) \
                and any(fnmatch.fnmatch(child.name, k) for k in keep_on_failure):
            child.unlink()  # checkpoints are only for resuming; a finished output has no use for them
    try:
        _move_into_place(stage, out, overwrite)
    finally:
        release_output(out)


def _move_into_place(stage: Path, out: Path, overwrite: bool) -> None:
    """Replace `out` by `stage`. An earlier dfqvit output is first renamed to a fresh hidden name
    made here (mkdtemp), so no existing path but `out` itself is ever touched; an empty folder the
    user made keeps its permissions."""
    if out.is_symlink() or (out.exists() and not out.is_dir()):
        raise OutputError(f"--out {printable(out)} appeared during the run as a file or link; results kept in "
                          f"{printable(stage)}")
    if not out.exists():
        os.replace(stage, out)
        return
    if any(out.iterdir()):
        if not is_dfqvit_output(out) or not overwrite:  # appeared while we worked
            raise OutputError(f"--out {printable(out)} appeared during the run and is not replaceable; results "
                              f"kept in {printable(stage)}")
        old = Path(tempfile.mkdtemp(prefix=f".{out.name[:100]}.replaced-", dir=out.parent))
        os.replace(out, old)  # onto the empty folder just made
        os.replace(stage, out)
        shutil.rmtree(old)
        return
    os.chmod(stage, out.stat().st_mode & 0o7777)  # the user's empty folder: keep its mode
    os.replace(stage, out)
