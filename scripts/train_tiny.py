"""Train the embedded default (tiny ViT on scikit-learn digits) and write its weights into the package.

    python scripts/train_tiny.py            # ~2-4 minutes on 2 CPU cores

Prints the held-out accuracy that the README quotes.
"""
from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from dfqvit.data.digits import digits_split
from dfqvit.models.tiny import TINY_WEIGHTS, build_tiny_vit


def augment(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Random shifts of up to 3 pixels: digits are small, so this is enough to generalise."""
    shifts = torch.randint(-3, 4, (2,), generator=gen).tolist()
    return torch.roll(x, shifts=shifts, dims=(2, 3))


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--epochs", type=int, default=60)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    torch.manual_seed(args.seed)
    gen = torch.Generator().manual_seed(args.seed)
    xtr, ytr = digits_split("train")
    xte, yte = digits_split("heldout")
    model = build_tiny_vit()
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=0.05)
    steps = args.epochs * ((len(ytr) + 63) // 64)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=2e-3, total_steps=steps, pct_start=0.1)
    for epoch in range(args.epochs):
        model.train()
        perm = torch.randperm(len(ytr), generator=gen)
        for i in range(0, len(ytr), 64):
            idx = perm[i:i + 64]
            loss = F.cross_entropy(model(augment(xtr[idx], gen)), ytr[idx], label_smoothing=0.1)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
        if epoch % 10 == 9 or epoch == args.epochs - 1:
            model.eval()
            with torch.no_grad():
                acc = (model(xte).argmax(1) == yte).float().mean().item()
            print(f"epoch {epoch + 1}: loss {loss.item():.3f} held-out top-1 {100 * acc:.2f}%")
    TINY_WEIGHTS.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(TINY_WEIGHTS))
    print(f"wrote {TINY_WEIGHTS}")


if __name__ == "__main__":
    main()
