"""Large synthetic sets: shards of one batch each, written as they finish, across processes and GPUs.

Shard s holds images s·B .. (s+1)·B − 1 and is synthesized with its own seed, derived from the
global seed and s alone, so the set does not depend on how many processes made it. Rank r of
N takes shards r, r + N, r + 2N, ...; each shard is written atomically to
`synthetic-SSSSS.pt` (images, targets, final loss terms, seed); an interrupted shard resumes
from its own checkpoint; rank 0 writes `manifest.json` once every shard is there. Memory
stays bounded by one batch.

Processes come from torch.distributed (torchrun, or `dfqvit synthesize --nproc N`): NCCL on
GPUs, gloo on CPU. Synthesis needs no communication but a barrier at the end.
"""
from __future__ import annotations

import json
import os
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any, Iterator

import torch
import torch.nn as nn

from ..errors import DataError
from .loop import SynthesisOptions, synthesize_images
from .methods import Method

MANIFEST = "manifest.json"
SHARD_PATTERN = "synthetic-{:05d}.pt"
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

    mine = list(range(rank, shard_count(options), world))
    bar = tqdm(total=len(mine) * options.batch_size, desc=f"synthesize[{method.name}] images", unit="img",
               disable=not progress or rank != 0)
    for index in mine:
        path = directory / SHARD_PATTERN.format(index)
        opts = shard_options(options, index)
        if resume and path.is_file():
            bar.update(opts.num_images)
            continue
        ckpt = directory / SHARD_CHECKPOINT.format(index)
        result = synthesize_images(model, method, input_size, num_classes, mean, std, opts, device, ckpt,
                                   resume=resume and ckpt.is_file(), progress=False)
        _save_atomically({"images": result.images.cpu(), "targets": result.targets.cpu(),
                          "final_terms": result.final_terms, "seed": opts.seed, "index": index}, path)
        if ckpt.is_file():
            ckpt.unlink()
        bar.update(opts.num_images)
    bar.close()
    return mine


def write_manifest(directory: Path, method: Method, options: SynthesisOptions, world: int) -> dict[str, Any]:
    """Rank 0, after every shard is written: what the set is and how each shard was made."""
    shards = []
    for index in range(shard_count(options)):
        data = torch.load(directory / SHARD_PATTERN.format(index), map_location="cpu", weights_only=True)
        shards.append({"file": SHARD_PATTERN.format(index), "index": index, "seed": data["seed"],
                       "images": len(data["images"]), "targets": data["targets"].tolist(),
                       "final_terms": data["final_terms"]})
    manifest = {"format": "dfqvit-synthetic-shards", "version": 1, "method": method.to_dict(),
                "options": asdict(options), "num_images": options.num_images, "shard_size": options.batch_size,
                "processes": world, "shards": shards}
    (directory / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n")
    return manifest


def read_manifest(directory: str | Path) -> dict[str, Any]:
    directory = Path(directory)
    path = directory / MANIFEST
    if not path.is_file():
        raise DataError(f"{directory}: no {MANIFEST} (expected the output folder of `dfqvit synthesize`)")
    try:
        manifest = json.loads(path.read_text())
    except ValueError:
        raise DataError(f"{path} is not valid JSON") from None
    missing = [s["file"] for s in manifest.get("shards", []) if not (directory / s["file"]).is_file()]
    if missing:
        raise DataError(f"{directory}: {len(missing)} shard(s) listed in the manifest are missing: {', '.join(missing[:3])}")
    return manifest


def _shard_images(directory: Path, file: str) -> torch.Tensor:
    return torch.load(directory / file, map_location="cpu", weights_only=True)["images"]


def iter_shards(directory: str | Path) -> Iterator[torch.Tensor]:
    """The images of a shard folder, one shard (one batch) at a time."""
    directory = Path(directory)
    for shard in read_manifest(directory)["shards"]:
        yield _shard_images(directory, shard["file"])


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
        self.files = [s["file"] for s in shards]
        self.starts = [0]
        for s in shards:
            self.starts.append(self.starts[-1] + int(s["images"]))
        self.device = torch.device(device)
        self._cached: tuple[int, torch.Tensor] | None = None
        self.shard_reads = 0  # how many times a shard was read from disk (tests, diagnostics)
        first = self._shard(0)
        self.shape = torch.Size((self.starts[-1], *first.shape[1:]))
        self.dtype = first.dtype

    def __len__(self) -> int:
        return self.starts[-1]

    def dim(self) -> int:
        return len(self.shape)

    def is_floating_point(self) -> bool:
        return self.dtype.is_floating_point

    def to(self, device: torch.device | str) -> "ShardImages":
        if torch.device(device) == self.device:
            return self
        other = object.__new__(ShardImages)
        other.__dict__.update(self.__dict__)
        other.device = torch.device(device)
        return other

    def _shard(self, index: int) -> torch.Tensor:
        if self._cached is None or self._cached[0] != index:
            images = _shard_images(self.directory, self.files[index])
            expected = self.starts[index + 1] - self.starts[index]
            if len(images) != expected:
                raise DataError(f"{self.directory / self.files[index]}: holds {len(images)} images, the manifest says {expected}")
            self._cached = (index, images)
            self.shard_reads += 1
        return self._cached[1]

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
