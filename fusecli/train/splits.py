"""Fixed train / held-out splits of the shared datasets, so that training and evaluation agree.

Harvard medical sets (``harvard_mri_pet``, ``harvard_mri_spect``, ``harvard_mri_ct``)
-------------------------------------------------------------------------------------
:func:`harvard_split`: the pair stems sorted as strings (Python ``sorted``); the stem at 0-based
position ``i`` is **held out when ``i % 5 == 4``** (every 5th), the others are for training. No
randomness, no file contents: the split depends on the set of stems only, so any copy of the
dataset (any machine, any file extension) splits the same way, and adding a file changes the
split only from its position on. For the public Harvard Whole Brain Atlas pair sets this gives

* ``harvard_mri_pet``: 269 pairs -> 216 train, 53 held out;
* ``harvard_mri_spect``: 357 pairs -> 286 train, 71 held out;
* ``harvard_mri_ct``: 184 pairs -> 148 train, 36 held out.

The stems are ``<series><slice>`` (e.g. ``25015``: series 25, slice 015) and every series is a
contiguous run in the sorted order, so every series keeps 4/5 of its slices for training and
gives 1/5 to the held-out part, spread evenly over the brain. It is a **slice-level** split (as
the Harvard / AANLIB fusion literature uses): a held-out slice has neighbouring slices of the same
scan in the training part. A series-level split is not possible for MRI-PET, which has three
series.

Training uses the train part (``fusecli train --split train``, and ``--split auto``, the default,
for the datasets named here); ``benchmarks/derun_medical.py`` evaluates on the held-out part.

MEFB multi-exposure set (``mefb``)
----------------------------------
:func:`mefb_split`: the same rule on the 100 MEFB scene names (:data:`MEFB_SCENES`, the file stems
of the MEFB release): sorted as Python strings, every 5th (0-based position ``i % 5 == 4``)
held out, giving 80 training scenes and these 20 held-out ones: Arno, Bathtub, Chair, Exploratorium,
ICCV_03, ICCV_08, ICCV_13, Knossos6, Land, MadisonCapitol, Office, Set, TableLamp, Villa, Window2,
buildingRoad, door2, hongkong_01, sculpture, uk_01. ``fusecli train cscfuse-mef`` trains on the 80;
``benchmarks/mef_baseline.py`` scores the 20.

RoadScene infrared-visible set (``roadscene``)
----------------------------------------------
:func:`roadscene_split`: the same every-5th rule on the sorted stems, and in addition its night
pairs (:data:`ROADSCENE_NIGHT`: visible mean luminance below 80/255, the rule of
``benchmarks/night_pairs.txt``) are always held out, so that the night evaluation never sees a
training scene. For the 221 pairs of the public RoadScene set this gives 174 train and 47
held out. TNO is never trained on (it is the infrared-visible test set).

Validation part (``--split fit`` / ``val``)
-------------------------------------------
:func:`validation_split`: the train part of any of these splits, sorted, with every 8th stem
(0-based position ``i % 8 == 7``) set aside to choose a training run's epoch
(``benchmarks/select_epoch.py``); ``--split fit`` trains on the rest. The held-out part is never
touched, so an epoch chosen on ``val`` leaves the test figures unbiased. RoadScene: 174 train ->
153 fit + 21 val; Harvard MRI-PET 216 -> 189 + 27; MRI-SPECT 286 -> 251 + 35.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TypeVar

from ..errors import ConfigError

__all__ = ["HARVARD_DATASETS", "HELD_OUT_EVERY", "VALIDATION_EVERY", "SPLIT_CHOICES", "PARTS", "harvard_split",
           "validation_split", "has_fixed_split", "split_stems", "select_pairs", "MEFB_SCENES", "mefb_split",
           "ROADSCENE_NIGHT", "roadscene_split"]

#: every HELD_OUT_EVERY-th sorted stem (0-based positions 4, 9, 14, ...) is held out
HELD_OUT_EVERY = 5

#: dataset folder names that have the fixed split of :func:`harvard_split`
HARVARD_DATASETS: tuple[str, ...] = ("harvard_mri_pet", "harvard_mri_spect", "harvard_mri_ct")

#: every VALIDATION_EVERY-th sorted stem of the train part (positions 7, 15, ...) is for validation
VALIDATION_EVERY = 8

#: values of ``fusecli train --split``: ``auto`` = the train part where a fixed split is defined,
#: every pair elsewhere; ``train`` = the train part (an error for a dataset without a fixed split);
#: ``fit`` = the train part without its validation part (:func:`validation_split`); ``all`` =
#: every pair (no held-out part)
SPLIT_CHOICES: tuple[str, ...] = ("auto", "train", "fit", "all")

#: the parts of a fixed split: ``train`` (= ``fit`` + ``val``), ``fit``, ``val``, ``test`` (held out)
PARTS: tuple[str, ...] = ("train", "fit", "val", "test")

T = TypeVar("T")


def harvard_split(stems: Iterable[str], *, every: int = HELD_OUT_EVERY) -> tuple[list[str], list[str]]:
    """The fixed split of a Harvard medical set: ``(train, held_out)`` stems, each sorted.

    Args:
        stems: the pair stems (file names without extension), any order; duplicates count once.
        every: hold out sorted positions ``every - 1, 2 * every - 1, ...`` (default 5).

    Returns:
        Two disjoint sorted lists whose union is the set of ``stems``.

    Raises:
        ConfigError: ``every`` < 2 (nothing, or everything, would be left for training).
    """
    if every < 2:
        raise ConfigError(f"the held-out split needs every >= 2, got {every}")
    ordered = sorted(set(stems))
    train = [s for i, s in enumerate(ordered) if i % every != every - 1]
    held_out = [s for i, s in enumerate(ordered) if i % every == every - 1]
    return train, held_out


def validation_split(train: Iterable[str], *, every: int = VALIDATION_EVERY) -> tuple[list[str], list[str]]:
    """A train part's ``(fit, val)`` stems, each sorted: every ``every``-th sorted stem (0-based
    positions ``every - 1, 2 * every - 1, ...``) is for validation (:func:`harvard_split`'s rule).

    Raises:
        ConfigError: ``every`` < 2.
    """
    return harvard_split(train, every=every)


def has_fixed_split(dataset: str | Path) -> bool:
    """Whether the dataset folder ``dataset`` (by its name) has a fixed split defined here."""
    return Path(dataset).name.lower() in (*HARVARD_DATASETS, "mefb", "roadscene")


def split_stems(dataset: str | Path, stems: Iterable[str], part: str) -> list[str]:
    """The stems of ``part`` of ``dataset``'s fixed split.

    Args:
        dataset: the dataset folder (its name selects the split: see :data:`HARVARD_DATASETS`).
        stems: the dataset's pair stems.
        part: one of :data:`PARTS`: ``"train"``, its ``"fit"`` and ``"val"`` parts
            (:func:`validation_split`), or ``"test"`` (the held-out part).

    Returns:
        The sorted stems of that part.

    Raises:
        ConfigError: no fixed split is defined for this dataset, or ``part`` is unknown.
    """
    if part not in PARTS:
        raise ConfigError(f"split part must be one of {', '.join(PARTS)}, got {part!r}")
    if not has_fixed_split(dataset):
        raise ConfigError(f"no fixed train/held-out split is defined for '{Path(dataset).name}' (defined for: "
                          f"{', '.join(HARVARD_DATASETS)}, mefb, roadscene); use --split all to train on all its pairs")
    name = Path(dataset).name.lower()
    split = {"mefb": mefb_split, "roadscene": roadscene_split}.get(name, harvard_split)
    train, held_out = split(stems)
    if part in ("fit", "val"):
        fit, val = validation_split(train)
        return fit if part == "fit" else val
    return train if part == "train" else held_out


def select_pairs(dataset: str | Path, pairs: Sequence[T], split: str, *, stem=lambda p: p.stem) -> list[T]:
    """The pairs (or image files) of ``dataset`` that a run with ``--split split`` uses.

    Args:
        dataset: the dataset folder.
        pairs: its pairs (:class:`fusecli.pairs.Pair`) or files; ``stem(item)`` gives the stem.
        split: ``"auto"``, ``"train"``, ``"fit"``, ``"all"`` (see :data:`SPLIT_CHOICES`), or for
            evaluation ``"val"`` (the validation part of the train part) or ``"test"`` (the held-out part).

    Returns:
        The selected items, in their given order.

    Raises:
        ConfigError: an unknown ``split``, or ``train``/``test`` for a dataset without a fixed split.
    """
    if split not in (*SPLIT_CHOICES, "val", "test"):
        raise ConfigError(f"--split must be one of {', '.join(SPLIT_CHOICES)}, got {split!r}")
    if split == "all" or (split == "auto" and not has_fixed_split(dataset)):
        return list(pairs)
    part = "train" if split == "auto" else split
    keep = set(split_stems(dataset, [stem(p) for p in pairs], part))
    return [p for p in pairs if stem(p) in keep]


#: the 100 scene names of the MEFB benchmark (Zhang, Information Fusion 2021; its file stems)
MEFB_SCENES: tuple[str, ...] = (
    "507", "AirBellowsGap", "AmikeusBeaverDam", "ArchSequence", "Arno", "ArtistPalette", "BalancedRock", "Balloons",
    "BarHarborSunrise", "Bathtub", "BelgiumHouse", "BloomingGorse", "Candle", "Cave", "Chair", "ChineseGarden",
    "Church", "ColorChecker", "Door", "Exploratorium", "Farmhouse", "House", "ICCV_01", "ICCV_02", "ICCV_03",
    "ICCV_04", "ICCV_05", "ICCV_06", "ICCV_07", "ICCV_08", "ICCV_09", "ICCV_10", "ICCV_11", "ICCV_12", "ICCV_13",
    "ICCV_14", "ICCV_15", "Igloo", "Kluki", "Knossos6", "Knossos7", "Knossos8", "Lake1", "Lamp", "Land",
    "Landscape", "Laurenziana", "Lighthouse", "LivingRoom", "MadisonCapitol", "Mask", "Memorial", "Museum1",
    "Night", "Office", "Ostrow", "PantrySmallISO", "Preschool", "Room", "Set", "SevenElevenNight", "Sky",
    "Stream", "Studio", "TableLamp", "TestChart1", "Tree", "TreyRatcliff", "Venice", "Villa", "WaffleHouse",
    "WallDrug", "WillyDesk", "Window", "Window2", "WindowTrim", "YellowHall", "Zentrum", "building",
    "buildingRoad", "crete", "dessert", "disney1", "disney2", "door2", "flower", "flowerGate", "flowerGate2",
    "garage", "hongkong_01", "hongkong_02", "horse", "hyderPark", "road", "sculpture", "tianchi", "tower", "town",
    "town2", "uk_01",
)


def mefb_split(stems: Iterable[str] | None = None) -> tuple[list[str], list[str]]:
    """The fixed MEFB split: ``(train, held_out)`` scene names, each sorted (80 and 20 scenes).

    The held-out scenes are every 5th of the sorted :data:`MEFB_SCENES` (:func:`harvard_split`'s
    rule), fixed once and for all, so a copy of MEFB with extra or missing scenes keeps the same
    20 held out.

    Args:
        stems: the stems present in a dataset copy (default: :data:`MEFB_SCENES`). Stems that are
            not MEFB scenes go to the train part.

    Returns:
        ``(train, held_out)``: disjoint sorted lists whose union is ``stems``.
    """
    held = set(harvard_split(MEFB_SCENES)[1])
    ordered = sorted(set(MEFB_SCENES if stems is None else stems))
    return [s for s in ordered if s not in held], [s for s in ordered if s in held]


#: RoadScene's night pairs (visible mean luminance < 80/255; see benchmarks/night_pairs.txt)
ROADSCENE_NIGHT: tuple[str, ...] = ("FLIR_06974", "FLIR_06995", "FLIR_07190")


def roadscene_split(stems: Iterable[str]) -> tuple[list[str], list[str]]:
    """The fixed RoadScene split: ``(train, held_out)`` stems, each sorted.

    Every 5th sorted stem (:func:`harvard_split`'s rule) plus the night pairs
    :data:`ROADSCENE_NIGHT` are held out.
    """
    train, held = harvard_split(stems)
    night = set(ROADSCENE_NIGHT)
    return [s for s in train if s not in night], sorted(set(held) | (night & set(train)))
