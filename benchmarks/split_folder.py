"""Make a dataset folder of one part of a dataset's fixed split: symlinks to its pairs, role folders kept.

    python benchmarks/split_folder.py ../shared/datasets/roadscene runs/roadscene-heldout
    python benchmarks/split_folder.py ../shared/datasets/harvard_mri_pet runs/pet-val --part val
    python benchmarks/split_folder.py ../shared/datasets/roadscene .gpudata/roadscene_fit --part fit --copy

The split is :mod:`fusecli.train.splits`' (``--part test``, the default, is the held-out part that
training never sees), so commands that take a dataset folder (``fusecli robustness``, ``batch``,
``metrics``) run on exactly those pairs. OUT must not exist yet. ``--copy`` copies the files instead
(a folder to carry to another machine, where the links would point nowhere).
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

from fusecli.pairs import scan_pairs
from fusecli.train.splits import PARTS, select_pairs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dataset", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--part", choices=PARTS, default="test")
    parser.add_argument("--copy", action="store_true", help="copy the files instead of linking them")
    args = parser.parse_args()
    if args.out.exists():
        parser.error(f"{args.out} exists; choose a new folder")
    scan = scan_pairs(args.dataset)
    pairs = select_pairs(args.dataset, scan.pairs, args.part)
    for role in scan.roles:
        (args.out / role).mkdir(parents=True)
    for pair in pairs:
        for role, path in zip(scan.roles, pair.paths):
            target = args.out / role / path.name
            if args.copy:
                shutil.copy2(path, target)
            else:
                target.symlink_to(path.resolve())
    print(f"{len(pairs)} of {len(scan.pairs)} pairs ({args.part} part of {args.dataset.name}) -> {args.out}")


if __name__ == "__main__":
    main()
