"""../shared is what conftest's stand-ins stand for: the official checkpoints have the files, keys,
shapes and types that ``official_layout`` writes for the stand-ins, and the datasets have the
sizes and listings that the fixed splits, the shards and the CAVE stand-in were made for.

The tests of properties use ../shared when it is here and the stand-ins otherwise; these pins are
about ../shared itself, in one test: one skip without it."""

from __future__ import annotations

import torch

from fusecli.io import read_cube
from fusecli.pairs import scan_pairs, take_shard
from fusecli.train.splits import MEFB_SCENES, select_pairs

from .conftest import OFFICIAL, OFFICIAL_FILES, official_layout, stand_in_state


def _layout(files: dict[str, dict[str, torch.Tensor]]) -> dict[str, dict[str, tuple]]:
    return {file: {k: (tuple(v.shape), v.dtype) for k, v in state.items()} for file, state in files.items()}


def test_shared_checkpoints_and_datasets_are_the_pinned_ones(shared_dir):
    datasets = shared_dir / "datasets"
    # the official checkpoints: the stand-ins' layout, file by file, key by key
    for folder, model, card in OFFICIAL_FILES:
        official = {p.name: torch.load(p, map_location="cpu", weights_only=True)
                    for p in sorted((OFFICIAL / folder).iterdir())}
        assert _layout(official) == _layout(official_layout(model, stand_in_state(card))), folder
    # TNO: 42 pairs (the visible images of the degradation severity test)
    assert sorted(p.name for p in (datasets / "tno" / "ir").iterdir()) == [f"{i:02d}.png" for i in range(1, 43)]
    assert sorted(p.name for p in (datasets / "tno" / "vis").iterdir()) == [f"{i:02d}.png" for i in range(1, 43)]
    # RoadScene: 221 pairs, each in one of 3 shards
    pairs = scan_pairs(datasets / "roadscene").pairs
    stems = [p.stem for i in range(3) for p in take_shard(pairs, i, 3)]
    assert len(pairs) == 221 and sorted(stems) == sorted(p.stem for p in pairs) and len(set(stems)) == 221
    # the Harvard medical sets: the fixed split's sizes and first held-out stems
    for name, count, held, first_held in (("harvard_mri_pet", 269, 53, ["25019", "25024", "25029"]),
                                          ("harvard_mri_spect", 357, 71, ["10011", "10016", "10021"])):
        dataset = datasets / name
        scan = scan_pairs(dataset)
        test_part = select_pairs(dataset, scan.pairs, "test")
        train_part = select_pairs(dataset, scan.pairs, "train")
        assert len(scan.pairs) == count and len(test_part) == held and len(train_part) == count - held, name
        assert [p.stem for p in test_part[:3]] == first_held
        assert {p.stem for p in train_part}.isdisjoint(p.stem for p in test_part)
    # MEFB: its scenes are MEFB_SCENES (the split's list)
    assert {p.stem for p in (datasets / "mefb" / "under").iterdir()} == set(MEFB_SCENES)
    # CAVE's balloons: 31 bands of 512 x 512 in 16 bits, the brightest 63,238
    cube, info = read_cube(datasets / "cave" / "balloons_ms")
    assert (info.bands, info.height, info.width, info.dtype) == (31, 512, 512, "uint16")
    assert 0 <= cube.min() and cube.max() <= 63_238 / 65535 + 1e-6
