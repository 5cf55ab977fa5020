"""How often does a training batch hold a single class? (Eq. 12's per-batch weights are 0/0 there.)

``python bench/single_class_batches.py [--draws 300]``

Draws random batches from the synthetic training split through the training augmentation (zoom 1-1.5,
random crop, flip) for a few (crop, batch size) settings and prints, as JSON, the fraction whose valid labels
are all one class. docs/losses.md ("Segmentation (Eq. 12)") quotes its output.
"""

from __future__ import annotations

import argparse
import json

import torch

from cinet.data import load_dataset
from cinet.data.transforms import build_transforms
from cinet.models.encoder import encoder_normalization

SETTINGS = (((96, 128), 8), ((32, 32), 1), ((64, 64), 1), ((32, 32), 2))


def single_class_fraction(dataset: torch.utils.data.Dataset, batch: int, draws: int) -> float:
    """Fraction of ``draws`` random batches of ``batch`` samples whose valid labels hold one class."""
    single = 0
    for _ in range(draws):
        idx = torch.randint(0, len(dataset), (batch,)).tolist()
        labels = torch.cat([dataset[i]["labels"].flatten() for i in idx])
        single += int(len(torch.unique(labels[labels != 255])) == 1)
    return single / draws


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--draws", type=int, default=300, help="random batches per setting (default 300)")
    parser.add_argument("--tiny", action="store_true", help="10 draws (a smoke run)")
    args = parser.parse_args(argv)
    draws = 10 if args.tiny else args.draws
    torch.manual_seed(0)
    mean, std = encoder_normalization("resnet18")
    rows = []
    for crop, batch in SETTINGS:
        tf = build_transforms(True, crop_size=crop, scale_range=(1.0, 1.5), rotation=0, flip=True,
                              color_jitter=None, mean=mean, std=std)  # fmt: skip
        ds = load_dataset("synthetic", split="train", size=[96, 128], length=40, transform=tf)
        rows.append(
            {"crop": list(crop), "batch_size": batch, "single_class": single_class_fraction(ds, batch, draws)}
        )
    print(json.dumps({"dataset": "synthetic 96x128, 40 rooms", "draws": draws, "rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
