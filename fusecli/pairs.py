"""Finding the pairs of a dataset: role folders, matching by file stem, and stable shards.

A dataset is a folder with one sub-folder per role (``ir/`` and ``vis/``, ``ct/`` and ``mri/``, ...).
The two sides of a pair have the same file stem in the two role folders; their extensions may
differ (``ir/0001.png`` + ``vis/0001.jpg``). :func:`scan_pairs` matches them and reports, never
drops, the files without a partner. ``batch``, ``metrics`` and ``degrade`` all pair datasets
with this module.

Roles are given in the order of a model's inputs: the first folder takes the model's first
input (the infrared / intensity role), the second the visible / texture role. For medical data
the functional scan (CT, PET, SPECT) takes the intensity role and MRI the texture role.

Sharding: :func:`shard_of` puts a stem in one of ``count`` shards by a hash (SHA-1) of its name,
so every machine, process and Python version agrees, and shards ``0/N`` ... ``N-1/N`` together
hold every pair exactly once.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from .errors import ConfigError, ImageReadError
from .io import list_images

__all__ = ["LAYOUTS", "Pair", "PairScan", "detect_roles", "scan_pairs", "ambiguity", "shard_of", "take_shard",
           "parse_shard", "format_shard"]

LAYOUTS: list[tuple[str, str]] = [
    ("ir", "vis"),
    ("ir", "vi"),
    ("infrared", "visible"),
    ("IR", "VIS"),
    ("A", "B"),
    ("ct", "mri"),
    ("pet", "mri"),
    ("spect", "mri"),
    ("under", "over"),
    ("near", "far"),
]
"""Role-folder layouts recognised without options, in order of preference: ``(role_a, role_b)``,
``role_a`` being the model's first input (infrared / functional scan / under-exposed / near focus)."""


@dataclass(frozen=True)
class Pair:
    """One set of source images with the same stem, in role order."""

    stem: str
    paths: tuple[Path, ...]


@dataclass(frozen=True)
class PairScan:
    """What :func:`scan_pairs` found.

    Attributes:
        roles: the role folder names, in the model's input order.
        pairs: the complete pairs, sorted by stem.
        unmatched: per role folder, the files whose stem has no partner in another role folder.
        duplicates: per role folder, the files of ambiguous stems: stems that several files in one
            role folder share (``x.png`` and ``x.jpg``). Such stems are not paired.
    """

    roles: tuple[str, ...]
    pairs: list[Pair]
    unmatched: dict[str, list[Path]]
    duplicates: dict[str, list[Path]] = field(default_factory=dict)

    @property
    def problems(self) -> list[str]:
        """One line per unmatched or ambiguous file, for summaries."""
        lines = []
        for role, paths in self.unmatched.items():
            others = "/".join(f"{r}/" for r in self.roles if r != role)
            lines += [f"{role}/{p.name}: no partner with stem {p.stem!r} in {others}" for p in paths]
        for role, paths in self.duplicates.items():
            lines += [f"{role}/{p.name}: {ambiguity(self, p.stem)}" for p in paths]
        return lines


def ambiguity(scan: PairScan, stem: str) -> str:
    """Why ``stem`` is not paired although it has files in several role folders."""
    where = [f"{role}/ ({', '.join(p.name for p in paths if p.stem == stem)})"
             for role, paths in scan.duplicates.items() if sum(p.stem == stem for p in paths) > 1]
    return f"several files have the stem {stem!r} in {' and '.join(where)}; keep one"


def _subfolders(dataset: Path) -> list[str]:
    return sorted(p.name for p in dataset.iterdir() if p.is_dir() and not p.name.startswith("."))


def detect_roles(dataset: str | os.PathLike[str], roles: Sequence[str] | None = None) -> tuple[str, ...]:
    """The role folders of ``dataset``, in model-input order.

    Args:
        dataset: the dataset folder.
        roles: folder names (or paths) to use instead of detecting them, e.g. ``("lwir", "rgb")``.

    Returns:
        The role folder names, e.g. ``("ir", "vis")`` or ``("ct", "mri")``.

    Raises:
        ConfigError: ``dataset`` is not a folder, a given role folder is missing, or no layout of
            :data:`LAYOUTS` (or more than one) is present; the message lists the sub-folders found.
    """
    dataset = Path(dataset)
    if not dataset.is_dir():
        raise ConfigError(f"dataset '{dataset}' is not an existing folder; pass the folder that holds "
                          "the role folders (e.g. ir/ and vis/)")
    found = _subfolders(dataset)
    listing = ", ".join(f"{name}/" for name in found) or "none"
    if roles is not None:
        roles = tuple(str(r) for r in roles)
        if len(roles) < 2:
            raise ConfigError("name at least two role folders (e.g. --ir lwir --vis rgb)")
        if len(set(roles)) != len(roles):
            raise ConfigError(f"the role folders must differ, got {', '.join(roles)}")
        missing = [r for r in roles if not (dataset / r).is_dir()]
        if missing:
            raise ConfigError(f"no folder {', '.join(repr(m) for m in missing)} in '{dataset}'; "
                              f"its sub-folders are: {listing}")
        return roles
    matches: list[tuple[str, str]] = []
    for layout in LAYOUTS:
        if not all((dataset / r).is_dir() for r in layout):
            continue
        # on case-insensitive file systems ir/+vis/ also matches IR/+VIS/: count those once
        if any(all(os.path.samefile(dataset / a, dataset / b) for a, b in zip(layout, m)) for m in matches):
            continue
        matches.append(layout)
    if not matches:
        known = "; ".join(f"{a}/+{b}/" for a, b in LAYOUTS)
        raise ConfigError(f"no known role folders in '{dataset}' (sub-folders: {listing}); expected one of "
                          f"{known}; or name them with --ir/--vis (or --a/--b)")
    if len(matches) > 1:
        options = " and ".join(f"{a}/+{b}/" for a, b in matches)
        raise ConfigError(f"'{dataset}' holds several layouts ({options}); choose one with --ir/--vis "
                          "(or --a/--b)")
    return matches[0]


def scan_pairs(dataset: str | os.PathLike[str], roles: Sequence[str] | None = None) -> PairScan:
    """Pair the images of ``dataset`` by file stem across its role folders.

    Args:
        dataset: the dataset folder.
        roles: role folder names in model-input order; detected with :func:`detect_roles` if None.

    Returns:
        A :class:`PairScan`: the pairs sorted by stem, plus the unmatched and ambiguous files.

    Raises:
        ConfigError: see :func:`detect_roles`.
    """
    dataset = Path(dataset)
    roles = detect_roles(dataset, roles)
    by_role: dict[str, dict[str, list[Path]]] = {}
    for role in roles:
        try:
            images = list_images(dataset / role)
        except ImageReadError as exc:  # pragma: no cover - detect_roles checked it is a folder
            raise ConfigError(str(exc)) from exc
        stems: dict[str, list[Path]] = {}
        for path in images:
            stems.setdefault(path.stem, []).append(path)
        by_role[role] = stems
    ambiguous = {s for stems in by_role.values() for s, ps in stems.items() if len(ps) > 1}
    common = set.intersection(*(set(m) for m in by_role.values())) - ambiguous
    pairs = [Pair(stem, tuple(by_role[r][stem][0] for r in roles)) for stem in sorted(common)]
    unmatched, duplicates = {}, {}
    for role in roles:
        alone = sorted(ps[0] for s, ps in by_role[role].items() if s not in common and s not in ambiguous)
        if alone:
            unmatched[role] = alone
        clash = sorted(p for s, ps in by_role[role].items() if s in ambiguous for p in ps)
        if clash:
            duplicates[role] = clash
    return PairScan(roles=roles, pairs=pairs, unmatched=unmatched, duplicates=duplicates)


# --- shards ---------------------------------------------------------------------------------------

def shard_of(stem: str, count: int) -> int:
    """The shard (0 ... count-1) of ``stem``: SHA-1 of its UTF-8 name, modulo ``count``. Stable
    across runs, machines and Python versions (unlike ``hash()``)."""
    digest = hashlib.sha1(stem.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") % count


def take_shard(pairs: Iterable[Pair], index: int, count: int) -> list[Pair]:
    """The pairs of shard ``index`` of ``count`` (see :func:`shard_of`)."""
    return [p for p in pairs if shard_of(p.stem, count) == index]


def _env_int(env: Mapping[str, str], name: str) -> int | None:
    value = env.get(name)
    if value is None or value.strip() == "":
        return None
    try:
        return int(value)
    except ValueError:
        raise ConfigError(f"--shard auto: {name}={value!r} is not an integer") from None


def parse_shard(spec: str | None, env: Mapping[str, str] | None = None) -> tuple[int, int] | None:
    """Parse ``--shard``: ``"i/N"`` (0 <= i < N), ``"auto"`` or None/"" (no sharding).

    ``auto`` reads a SLURM job array: the shard index is ``(SLURM_ARRAY_TASK_ID -
    SLURM_ARRAY_TASK_MIN) / SLURM_ARRAY_TASK_STEP`` and the count ``SLURM_ARRAY_TASK_COUNT`` (or
    ``(MAX - MIN) / STEP + 1``); so ``--array=0-3`` and ``--array=1-4`` both give shards 0/4 ... 3/4.
    Outside a job array, ``auto`` means no sharding.

    Returns:
        ``(index, count)``, or None for no sharding.

    Raises:
        ConfigError: a malformed spec or SLURM variables that do not add up.
    """
    if spec is None or spec.strip() == "":
        return None
    spec = spec.strip().lower()
    if spec == "auto":
        env = os.environ if env is None else env
        task = _env_int(env, "SLURM_ARRAY_TASK_ID")
        if task is None:
            return None
        low = _env_int(env, "SLURM_ARRAY_TASK_MIN") or 0
        high = _env_int(env, "SLURM_ARRAY_TASK_MAX")
        step = _env_int(env, "SLURM_ARRAY_TASK_STEP") or 1
        count = _env_int(env, "SLURM_ARRAY_TASK_COUNT")
        if count is None:
            if high is None:
                raise ConfigError("--shard auto: SLURM_ARRAY_TASK_ID is set but neither SLURM_ARRAY_TASK_COUNT "
                                  "nor SLURM_ARRAY_TASK_MAX; pass --shard i/N")
            count = (high - low) // step + 1
        index, rest = divmod(task - low, step)
        if rest or not 0 <= index < count:
            raise ConfigError(f"--shard auto: SLURM_ARRAY_TASK_ID={task} does not fit an array of {count} "
                              f"tasks from {low} in steps of {step}; use a contiguous --array (e.g. 0-{count - 1}) "
                              "or pass --shard i/N")
        return index, count
    index_text, slash, count_text = spec.partition("/")
    if not slash or not index_text.strip().isdigit() or not count_text.strip().isdigit():
        raise ConfigError(f"--shard {spec!r}: expected i/N (e.g. 0/4) or auto")
    index, count = int(index_text), int(count_text)
    if count < 1 or index >= count:
        n = max(count, 2)
        raise ConfigError(f"--shard {spec}: need 0 <= i < N, e.g. 0/{n} ... {n - 1}/{n}")
    return index, count


def format_shard(shard: tuple[int, int] | None) -> str | None:
    return None if shard is None else f"{shard[0]}/{shard[1]}"
