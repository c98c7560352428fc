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


def iter_shards(directory: str | Path) -> Iterator[torch.Tensor]:
    """The images of a shard folder, one shard (one batch) at a time."""
    directory = Path(directory)
    for shard in read_manifest(directory)["shards"]:
        yield torch.load(directory / shard["file"], map_location="cpu", weights_only=True)["images"]


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
