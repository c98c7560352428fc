"""Large synthetic sets: shards of one batch each, written as they finish, across processes and GPUs.

Shard s holds images s·B .. (s+1)·B − 1 and is synthesized with its own seed, derived from the
global seed and s alone, so the set does not depend on how many processes made it (at equal CPU
threads per process: float sums depend on the thread count). Rank r of
N takes shards r, r + N, r + 2N, ...; each shard is written atomically to
`synthetic-SSSSS.pt` (images, targets, final loss terms, seed, and the identity of the run that
made it: method, options, model weights); an interrupted shard resumes from its own checkpoint
and a finished one is kept only if its identity is this run's; rank 0 writes `manifest.json`
(with each shard's SHA-256) once every shard is there. Memory stays bounded by one batch.

Processes come from torch.distributed (torchrun, or `dfqvit synthesize --nproc N`): NCCL on
GPUs, gloo on CPU. Synthesis needs no communication but a barrier at the end.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import re
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any, Iterator

import torch
import torch.nn as nn

from ..data.lowpass import low_pass
from ..errors import CheckpointError, DataError
from .loop import SynthesisOptions, run_identity, synthesize_images
from .methods import Method

MANIFEST = "manifest.json"
SHARD_PATTERN = "synthetic-{:05d}.pt"
SHARD_NAME = re.compile(r"^synthetic-\d{5}\.pt$")  # a manifest names files in its own folder, nothing else
SHARD_CHECKPOINT = "shard-{:05d}.ckpt.pt"


def shard_seed(seed: int, index: int) -> int:
    """A seed per shard that depends on the global seed and the shard index only."""
    return (seed * 1_000_003 + index * 7_919 + 12_345) % (2**62)


def shard_count(options: SynthesisOptions) -> int:
    return -(-options.num_images // options.batch_size)


def shard_options(options: SynthesisOptions, index: int) -> SynthesisOptions:
    size = min(options.batch_size, options.num_images - index * options.batch_size)
    return replace(options, num_images=size, batch_size=size, seed=shard_seed(options.seed, index))


def distributed_context() -> tuple[int, int]:
    """(rank, world size) from torch.distributed, initialising it when torchrun set the environment."""
    import torch.distributed as dist

    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return 0, 1
    if not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() and dist.is_nccl_available() else "gloo"
        if backend == "nccl":
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group(backend)
    return dist.get_rank(), dist.get_world_size()


def barrier() -> None:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def _save_atomically(obj: Any, path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def synthesize_shards(model: nn.Module, method: Method, input_size: tuple[int, int, int], num_classes: int,
                      mean: tuple[float, ...], std: tuple[float, ...], options: SynthesisOptions, directory: Path,
                      device: torch.device | str = "cpu", resume: bool = False, rank: int = 0, world: int = 1,
                      progress: bool = True) -> list[int]:
    """Synthesize this rank's shards into `directory`; return the shard indices it wrote (or found done)."""
    from tqdm.auto import tqdm

    from ..models.loading import fingerprint

    model_sha256 = fingerprint(model)
    mine = list(range(rank, shard_count(options), world))
    bar = tqdm(total=len(mine) * options.batch_size, desc=f"synthesize[{method.name}] images", unit="img",
               disable=not progress or rank != 0)
    for index in mine:
        path = directory / SHARD_PATTERN.format(index)
        opts = shard_options(options, index)
        identity = run_identity(method, opts, model_sha256)
        if resume and path.is_file():
            found = _read_shard(path)[0].get("identity")
            if found != identity:
                raise CheckpointError(f"{path.name} in {directory} was made by another method, options, seed or model "
                                      f"(it cannot be part of this set); start over with --overwrite")
            bar.update(opts.num_images)
            continue
        ckpt = directory / SHARD_CHECKPOINT.format(index)
        result = synthesize_images(model, method, input_size, num_classes, mean, std, opts, device, ckpt,
                                   resume=resume and ckpt.is_file(), progress=False, model_sha256=model_sha256)
        _save_atomically({"images": result.images.cpu(), "targets": result.targets.cpu(),
                          "final_terms": result.final_terms, "seed": opts.seed, "index": index,
                          "identity": identity}, path)
        if ckpt.is_file():
            ckpt.unlink()
        bar.update(opts.num_images)
    bar.close()
    return mine


def _read_shard(path: Path, sha256: str | None = None) -> tuple[dict[str, Any], str]:
    """A shard file as written by `synthesize_shards` and the SHA-256 of its bytes, from one read
    (checked against `sha256` first, when given); anything else is one DataError line (the loader's
    own text, which may advise unsafe loading, never reaches the user)."""
    raw = path.read_bytes()
    digest = hashlib.sha256(raw).hexdigest()
    if sha256 is not None and digest != sha256:
        raise DataError(f"{path}: checksum mismatch with the manifest (the shard is corrupt or was replaced)")
    try:
        data = torch.load(io.BytesIO(raw), map_location="cpu", weights_only=True)
    except Exception:
        raise DataError(f"{path} is not a shard written by `dfqvit synthesize` (unreadable, truncated, or it holds "
                        f"objects other than tensors)") from None
    if not isinstance(data, dict) or not isinstance(data.get("images"), torch.Tensor):
        raise DataError(f"{path} holds no 'images' tensor (not a shard written by `dfqvit synthesize`)")
    return data, digest


def write_manifest(directory: Path, method: Method, options: SynthesisOptions, world: int) -> dict[str, Any]:
    """Rank 0, after every shard is written: what the set is and how each shard was made."""
    shards = []
    for index in range(shard_count(options)):
        path = directory / SHARD_PATTERN.format(index)
        data, sha256 = _read_shard(path)
        shards.append({"file": SHARD_PATTERN.format(index), "index": index, "seed": data["seed"],
                       "images": len(data["images"]), "targets": data["targets"].tolist(),
                       "final_terms": data["final_terms"], "sha256": sha256})
    manifest = {"format": "dfqvit-synthetic-shards", "version": 2, "method": method.to_dict(),
                "options": asdict(options), "num_images": options.num_images, "shard_size": options.batch_size,
                "processes": world, "threads_per_process": torch.get_num_threads(), "shards": shards}
    (directory / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n")
    return manifest


def read_manifest(directory: str | Path) -> dict[str, Any]:
    """The manifest of a shard folder, after checking that it lists each shard once, by a plain file
    name in the folder itself (no paths), and that every listed shard is there."""
    directory = Path(directory)
    path = directory / MANIFEST
    if not path.is_file():
        raise DataError(f"{directory}: no {MANIFEST} (expected the output folder of `dfqvit synthesize`)")
    try:
        manifest = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError):
        raise DataError(f"{path} is not valid JSON") from None
    shards = manifest.get("shards") if isinstance(manifest, dict) else None
    if not isinstance(shards, list) or not all(isinstance(s, dict) for s in shards):
        raise DataError(f"{path} is not a manifest written by `dfqvit synthesize` (no list of shards)")
    for k, s in enumerate(shards):
        file, count = s.get("file"), s.get("images")
        if not isinstance(file, str) or not SHARD_NAME.match(file):
            raise DataError(f"{path}: shard {k} names {file!r}, not a shard file of this folder (synthetic-NNNNN.pt)")
        if not isinstance(count, int) or isinstance(count, bool) or count < 1:
            raise DataError(f"{path}: shard {file} gives no valid image count ({count!r})")
    files = [s["file"] for s in shards]
    repeated = sorted({f for f in files if files.count(f) > 1})
    if repeated:
        raise DataError(f"{path} lists {repeated[0]} more than once")
    hashes = [s["sha256"] for s in shards if isinstance(s.get("sha256"), str)]
    if len(set(hashes)) != len(hashes):
        raise DataError(f"{path}: two shards have the same content (a shard copied over another)")
    missing = [f for f in files if not (directory / f).is_file()]
    if missing:
        raise DataError(f"{directory}: {len(missing)} shard(s) listed in the manifest are missing: {', '.join(missing[:3])}")
    return manifest


def _shard_images(directory: Path, shard: dict[str, Any], input_size: tuple[int, ...] | None = None,
                  bound: float | None = None) -> torch.Tensor:
    """One shard's images, verified: its checksum (manifests since version 2), its image count,
    a float N×C×H×W tensor, finite values of an image's size (data/checks.py)."""
    from ..data.checks import image_tensor_problem

    path = directory / shard["file"]
    images = _read_shard(path, shard.get("sha256"))[0]["images"]
    problem = image_tensor_problem(images, input_size, bound)
    if problem:
        raise DataError(f"{path}: {problem}")
    if len(images) != shard["images"]:
        raise DataError(f"{path}: holds {len(images)} images, the manifest says {shard['images']}")
    return images


def iter_shards(directory: str | Path) -> Iterator[torch.Tensor]:
    """The images of a shard folder, one shard (one batch) at a time."""
    directory = Path(directory)
    shards = read_manifest(directory)["shards"]
    first = None
    for shard in shards:
        images = _shard_images(directory, shard, first)
        first = first or tuple(images.shape[1:])  # every shard of one set has the first one's image size
        yield images


def load_shards(directory: str | Path, limit: int | None = None) -> torch.Tensor:
    """The first `limit` images (all by default) of a shard folder, as one tensor."""
    out, n = [], 0
    for images in iter_shards(directory):
        out.append(images)
        n += len(images)
        if limit is not None and n >= limit:
            break
    images = torch.cat(out)
    return images if limit is None else images[:limit]


class ShardImages:
    """A shard folder's images, read one shard at a time as a quantization pass asks for them.

    The passes ask for `images[a:b]` in order (and distillation for random index batches); only
    the shard being read is held in memory, so a set of thousands of 224-px images calibrates in
    the memory of one shard. It offers what the passes use of a tensor: `len`, `shape`, `dtype`,
    `device`, `dim()`, `is_floating_point()`, `to(device)` and indexing by int, slice or index tensor.
    """

    def __init__(self, directory: str | Path, device: torch.device | str = "cpu") -> None:
        self.directory = Path(directory)
        shards = read_manifest(self.directory)["shards"]
        if not shards:
            raise DataError(f"{self.directory}: the manifest lists no shards")
        self.shards = shards
        self.input_size: tuple[int, ...] | None = None
        self.bound: float | None = None
        self.starts = [0]
        for s in shards:
            self.starts.append(self.starts[-1] + int(s["images"]))
        self.device = torch.device(device)
        self._cached: tuple[int, torch.Tensor] | None = None
        self.blur = 0.0  # σ of a Gaussian low-pass applied to each shard as it is read (low_passed)
        self.shard_reads = 0  # how many times a shard was read from disk (tests, diagnostics)
        first = self._shard(0)
        self.shape = torch.Size((self.starts[-1], *first.shape[1:]))
        self.dtype = first.dtype

    def expect(self, input_size: tuple[int, ...], bound: float) -> None:
        """Check every shard read from now on against the model's input size and value bound."""
        self.input_size, self.bound = tuple(input_size), bound
        self._cached = None

    def __len__(self) -> int:
        return self.starts[-1]

    def dim(self) -> int:
        return len(self.shape)

    def is_floating_point(self) -> bool:
        return self.dtype.is_floating_point

    def _with(self, **changes: Any) -> "ShardImages":
        """A view of the same shards with some attributes changed (no shard is read again until needed)."""
        other = object.__new__(ShardImages)
        other.__dict__.update(self.__dict__)
        other.__dict__.update(changes)
        return other

    def to(self, device: torch.device | str) -> "ShardImages":
        if torch.device(device) == self.device:
            return self
        return self._with(device=torch.device(device))

    def low_passed(self, sigma: float) -> "ShardImages":
        """The same set, each shard blurred (data/lowpass.py) as it is read."""
        return self._with(blur=sigma, _cached=None)

    def _shard(self, index: int) -> torch.Tensor:
        if self._cached is None or self._cached[0] != index:
            images = _shard_images(self.directory, self.shards[index], self.input_size or self._first_size(),
                                   self.bound)
            images = low_pass(images, self.blur)  # unchanged at σ 0
            self._cached = (index, images)
            self.shard_reads += 1
        return self._cached[1]

    def _first_size(self) -> tuple[int, ...] | None:
        return tuple(self.shape[1:]) if hasattr(self, "shape") else None

    def _gather(self, indices: torch.Tensor) -> torch.Tensor:
        """Images at `indices` (any order), reading each shard they touch once."""
        out = torch.empty((len(indices), *self.shape[1:]), dtype=self.dtype)
        shard_of = torch.bucketize(indices, torch.tensor(self.starts[1:]), right=True)
        for s in shard_of.unique().tolist():
            where = (shard_of == s).nonzero().flatten()
            out[where] = self._shard(s)[indices[where] - self.starts[s]]
        return out

    def __getitem__(self, key: int | slice | torch.Tensor | list[int]) -> torch.Tensor:
        n = len(self)
        if isinstance(key, int):
            if not -n <= key < n:
                raise IndexError(f"image {key} of {n}")
            return self[key % n:key % n + 1][0]
        if isinstance(key, slice):
            start, stop, step = key.indices(n)
            indices = torch.arange(start, stop, step, dtype=torch.long)
        else:
            indices = torch.as_tensor(key, dtype=torch.long).cpu().flatten()
            if len(indices) and (indices.min() < -n or indices.max() >= n):
                raise IndexError(f"index out of range for {n} images")
            indices = indices % n
        return self._gather(indices).to(self.device)


def open_shards(directory: str | Path, max_bytes_in_memory: int = 2**30) -> torch.Tensor | ShardImages:
    """A shard folder's images: one tensor when they fit in `max_bytes_in_memory`, else streamed."""
    stream = ShardImages(directory)
    per_image = stream.shape[1:].numel() * stream.dtype.itemsize
    return stream[:] if len(stream) * per_image <= max_bytes_in_memory else stream
