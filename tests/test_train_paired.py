"""Paired training (DeRUN): aligned crops, the fixed medical split, the eq. 14 loss, resume, the card,
and the medical colour rule at inference (PET/SPECT chroma kept, its Y fused)."""

from __future__ import annotations

import random

import cv2
import numpy as np
import pytest
import torch
import yaml
from typer.testing import CliRunner

from fusecli import create_model, fuse_files, fuse_images, read_image
from fusecli.cli import app
from fusecli.color import rgb_to_ycbcr
from fusecli.errors import ConfigError
from fusecli.pairs import scan_pairs
from fusecli.train import RECIPES, TrainConfig, step_decay_after, train
from fusecli.train.data import PairedCrops, collect_pairs, load_pair
from fusecli.train.recipes import DERUN_DEGRADE_KINDS, degrade_inputs
from fusecli.train.splits import harvard_split, select_pairs, split_stems, validation_split

from .conftest import SHARED, load_benchmark

TINY = {"stages": 1, "margin": 2}  # one unrolled stage: the loop and the loss are what is tested here


@pytest.fixture
def one_thread():
    """Tiny tensors: a second thread only adds overhead (and stalls on a busy machine)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _write_medical(root, stems, size=(20, 24), seed=0):
    """A fake harvard_mri_pet: pseudo-colour RGB PET (a red/yellow blob) and gray MRI."""
    rng = np.random.default_rng(seed)
    (root / "pet").mkdir(parents=True)
    (root / "mri").mkdir(parents=True)
    h, w = size
    yy, xx = np.mgrid[0:h, 0:w]
    for s in stems:
        blob = np.exp(-((yy - rng.uniform(5, h - 5)) ** 2 + (xx - rng.uniform(5, w - 5)) ** 2) / 30.0)
        rgb = np.stack([200 * blob + 30, 120 * blob + 20, 40 + 0 * blob], -1).round().astype(np.uint8)
        cv2.imwrite(str(root / "pet" / f"{s}.png"), rgb[..., ::-1])
        mri = cv2.GaussianBlur(rng.integers(0, 256, (h, w), dtype=np.uint8), (3, 3), 0)
        cv2.imwrite(str(root / "mri" / f"{s}.png"), mri)
    return root


def _write_ivf(root, n=2, size=(24, 28), seed=0):
    rng = np.random.default_rng(seed)
    for role in ("ir", "vis"):
        (root / role).mkdir(parents=True)
    for i in range(n):
        ir = cv2.GaussianBlur(rng.integers(0, 256, size, dtype=np.uint8), (7, 7), 0)
        vis = cv2.GaussianBlur(rng.integers(0, 256, size, dtype=np.uint8), (3, 3), 0)
        cv2.imwrite(str(root / "ir" / f"{i:02d}.png"), ir)
        cv2.imwrite(str(root / "vis" / f"{i:02d}.png"), vis)
    return root


# --- aligned crops -------------------------------------------------------------------------------

def test_paired_crops_take_the_same_window_and_flip_on_both_sides():
    h, w, size = 30, 40, 8
    ids = torch.arange(h * w, dtype=torch.float32).reshape(1, h, w)  # every pixel has its own value
    u, v = ids / (h * w), 1 - ids / (h * w)  # v is a pixel-wise function of u
    crops = PairedCrops([(u, v)], size, generator=torch.Generator().manual_seed(1))
    bu, bv = crops.batch(40)
    assert bu.shape == bv.shape == (40, 1, size, size)
    assert torch.allclose(bv, 1 - bu, atol=1e-6)  # same window, same flip: pixel for pixel
    pid = torch.round(bu[:, 0] * h * w).long()
    rows, cols = pid // w, pid % w
    assert torch.all(rows == rows[:, :, :1])  # each crop row is one image row ...
    assert torch.all(rows[:, 1:, 0] - rows[:, :-1, 0] == 1)  # ... in order (no vertical flip)
    steps = cols[:, :, 1:] - cols[:, :, :-1]
    flipped = torch.all(steps == -1, dim=(1, 2))
    assert torch.all(flipped | torch.all(steps == 1, dim=(1, 2)))  # contiguous window, maybe mirrored
    assert 5 < int(flipped.sum()) < 35  # both happen
    assert len({(int(r), int(c)) for r, c in zip(rows[:, 0, 0], cols[:, 0, :].min(1).values)}) > 20
    assert int(rows.max()) <= h - 1 and int(cols.max()) <= w - 1


def test_paired_crops_are_reproducible_and_reject_unfit_pairs():
    pairs = [(torch.rand(1, 20, 30), torch.rand(1, 20, 30)), (torch.rand(1, 25, 18), torch.rand(1, 25, 18))]
    a = PairedCrops(pairs, 16, generator=torch.Generator().manual_seed(3)).batch(5)
    b = PairedCrops(pairs, 16, generator=torch.Generator().manual_seed(3)).batch(5)
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    with pytest.raises(ConfigError, match="smaller than the 20 px crop"):
        PairedCrops(pairs, 20, generator=torch.Generator())
    with pytest.raises(ConfigError, match="one size"):
        PairedCrops([(torch.rand(1, 20, 20), torch.rand(1, 20, 21))], 8, generator=torch.Generator())


def test_collect_pairs_maps_roles_and_loads_the_pet_luma(tmp_path):
    data = _write_medical(tmp_path / "harvard_mri_pet", [f"{25000 + i}" for i in range(12)])
    (pair_set,) = collect_pairs([data])
    assert pair_set.roles == ("pet", "mri")  # U = PET (intensity), V = MRI (texture)
    assert pair_set.total == 12 and len(pair_set.pairs) == 10 and pair_set.part == "train"
    assert {p.stem for p in pair_set.pairs}.isdisjoint({"25004", "25009"})  # sorted positions 4 and 9
    u, v = load_pair(pair_set.pairs[0])
    rgb = cv2.imread(str(pair_set.pairs[0].paths[0]))[..., ::-1].astype(np.float64)
    y = (0.299 * rgb[..., 0] + 0.587 * rgb[..., 1] + 0.114 * rgb[..., 2]) / 255  # BT.601, by hand
    assert u.shape == v.shape == (1, 20, 24)
    assert np.abs(u[0].numpy() - y).max() < 1e-6
    assert len(collect_pairs([data], split="all")[0].pairs) == 12
    with pytest.raises(ConfigError, match="does not train on"):
        collect_pairs([data], layouts=(("ir", "vis"),))


# --- the held-out split --------------------------------------------------------------------------

def test_harvard_split_is_disjoint_complete_every_fifth_and_order_free():
    stems = [f"{s}{i:03d}" for s in (25, 30, 41) for i in range(15, 40)]
    train_part, held = harvard_split(stems)
    assert set(train_part).isdisjoint(held) and set(train_part) | set(held) == set(stems)
    assert held == sorted(stems)[4::5] and len(held) == len(stems) // 5
    shuffled = stems[:]
    random.Random(0).shuffle(shuffled)
    assert harvard_split(shuffled) == (train_part, held)
    assert harvard_split(stems + stems[:3]) == (train_part, held)  # duplicates count once


def test_split_selection_rules(tmp_path):
    stems = [f"{i:05d}" for i in range(10)]
    assert split_stems(tmp_path / "harvard_mri_spect", stems, "test") == ["00004", "00009"]
    items = [tmp_path / f"{s}.png" for s in stems]
    assert select_pairs(tmp_path / "llvip", items, "auto") == items  # no fixed split: every pair
    assert [p.stem for p in select_pairs(tmp_path / "harvard_mri_pet", items, "auto")] == \
        [s for s in stems if s not in ("00004", "00009")]
    with pytest.raises(ConfigError, match="no fixed train/held-out split"):
        select_pairs(tmp_path / "llvip", items, "train")
    with pytest.raises(ConfigError, match="--split"):
        select_pairs(tmp_path / "harvard_mri_pet", items, "half")


def test_validation_part_is_every_eighth_train_stem_and_fit_is_the_rest(tmp_path):
    stems = [f"{i:05d}" for i in range(40)]
    train_part = split_stems(tmp_path / "harvard_mri_pet", stems, "train")  # 32 stems
    fit_part, val = validation_split(train_part)
    assert val == train_part[7::8] and len(val) == 4
    assert sorted(fit_part + val) == train_part and not set(fit_part) & set(val)
    items = [tmp_path / f"{s}.png" for s in stems]
    picked = {part: [p.stem for p in select_pairs(tmp_path / "harvard_mri_pet", items, part)]
              for part in ("fit", "val", "test")}
    assert picked["fit"] == fit_part and picked["val"] == val
    assert not set(picked["val"]) & set(picked["test"])  # choosing an epoch never sees a test pair
    with pytest.raises(ConfigError, match="no fixed train/held-out split"):
        select_pairs(tmp_path / "llvip", items, "val")


def test_a_copied_fit_part_trains_on_the_same_pairs_with_split_all(tmp_path, monkeypatch):
    """benchmarks/split_folder.py --copy: a folder to carry to another machine (a GPU run) holds the
    fit part's files themselves, and --split all on it selects exactly the pairs --split fit does."""
    data = _write_medical(tmp_path / "harvard_mri_pet", [f"{25000 + i}" for i in range(40)])
    out = tmp_path / "carry" / "harvard_mri_pet_fit"
    monkeypatch.setattr("sys.argv", ["split_folder.py", str(data), str(out), "--part", "fit", "--copy"])
    load_benchmark("split_folder").main()
    copied = sorted((out / "pet").iterdir())
    assert copied and not any(p.is_symlink() for p in copied)
    assert (out / "pet" / copied[0].name).read_bytes() == (data / "pet" / copied[0].name).read_bytes()
    fit = [p.stem for p in collect_pairs([data], split="fit")[0].pairs]
    assert [p.stem for p in collect_pairs([out], split="all")[0].pairs] == fit and len(fit) == 28


# --- the recipe ----------------------------------------------------------------------------------

def test_derun_loss_decreases_on_a_tiny_overfit_run(tmp_path, one_thread):
    torch.manual_seed(0)
    data = _write_ivf(tmp_path / "d", n=2, size=(24, 24))
    (pair_set,) = collect_pairs([data])
    u, v = (torch.stack(side) for side in zip(*(load_pair(p) for p in pair_set.pairs)))
    model = create_model("derun", weights=None, stages=2, margin=4)
    model.train()
    recipe = RECIPES["derun"]
    optimizer = torch.optim.Adam(recipe.param_groups(model, 1e-3))
    losses, logs = [], []
    for _ in range(8):
        loss, log = recipe.loss(model, (u, v))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
        logs.append(log)
    assert set(logs[0]) == {"pixel", "lgde"}
    assert losses[0] == pytest.approx(logs[0]["pixel"] + 10 * logs[0]["lgde"], rel=1e-5)  # eq. 14, gamma = 10
    assert losses[-1] < 0.85 * losses[0], losses  # measured: 1.92 -> 1.48
    assert all(b < a for a, b in zip(losses, losses[1:])), losses


def test_derun_degrade_option_feeds_a_degraded_v_and_scores_against_the_clean_one(one_thread):
    torch.manual_seed(0)
    u, v = torch.rand(3, 1, 24, 24), torch.rand(3, 1, 24, 24) * 0.5 + 0.25
    rng = np.random.default_rng
    assert degrade_inputs(v, 0.0, rng(0)) is v  # the paper's recipe: V untouched
    seen = degrade_inputs(v, 1.0, rng(1))
    assert seen.shape == v.shape and all(not torch.equal(seen[b], v[b]) for b in range(3))
    assert torch.equal(seen, degrade_inputs(v, 1.0, rng(1)))  # the generator decides everything
    assert len(set(DERUN_DEGRADE_KINDS)) >= 6 and {"haze", "rain", "lowlight"} <= set(DERUN_DEGRADE_KINDS)

    from fusecli.losses import lgde_loss
    from fusecli.train.recipes import DERUN_LGDE_SOFTNESS
    model = create_model("derun", weights=None, stages=1, margin=2)
    recipe = RECIPES["derun"]
    assert recipe.options == {"pixel": 1.0, "lgde": 10.0, "intensity": 0.0, "gradient": 0.0, "ssim": 0.0, "degrade": 0.0}
    loss, logs = recipe.loss(model, (u, v), step=7, degrade=1.0)
    x = model(u, degrade_inputs(v, 1.0, np.random.default_rng([7, 14])))  # the step's own stream
    expected = torch.mean((x - u) ** 2) + 10 * lgde_loss(x, v, softness=DERUN_LGDE_SOFTNESS)  # clean V
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)
    assert loss.item() == pytest.approx(recipe.loss(model, (u, v), step=7, degrade=1.0)[0].item(), rel=1e-6)
    assert loss.item() != pytest.approx(recipe.loss(model, (u, v), step=7, degrade=0.0)[0].item(), rel=1e-3)


def test_derun_loss_terms_are_weighed_by_the_options(one_thread):
    from fusecli.train.recipes import intensity_gradient_loss
    torch.manual_seed(1)
    u, v = torch.rand(2, 1, 20, 20), torch.rand(2, 1, 20, 20)
    model = create_model("derun", weights=None, stages=1, margin=2)
    loss_fn = RECIPES["derun"].loss
    paper, logs = loss_fn(model, (u, v))
    assert set(logs) == {"pixel", "lgde"}
    assert paper.item() == pytest.approx(logs["pixel"] + 10 * logs["lgde"], rel=1e-5)
    ours, logs = loss_fn(model, (u, v), pixel=0, lgde=0, intensity=1, gradient=4)
    assert set(logs) == {"intensity", "gradient"}
    x = model(u, v)
    assert ours.item() == pytest.approx(intensity_gradient_loss(x, u, v, intensity=1, gradient=4)[0].item(), rel=1e-5)
    both, _ = loss_fn(model, (u, v), intensity=1, gradient=4)
    assert both.item() == pytest.approx(paper.item() + ours.item(), rel=1e-5)
    from fusecli.losses import ssim_loss
    structural, logs = loss_fn(model, (u, v), pixel=0, lgde=0, ssim=3)
    assert set(logs) == {"ssim"}
    expected = (ssim_loss(x, u) + ssim_loss(x, v)) / 2
    assert logs["ssim"] == pytest.approx(expected.item(), rel=1e-5)
    assert structural.item() == pytest.approx(3 * expected.item(), rel=1e-5)


def test_derun_schedule_follows_the_paper_and_scales():
    opt = torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))], lr=1e-4)
    sched, record = step_decay_after(50, 10, 0.9, epochs=150)(opt, 150)
    lrs = []
    for _ in range(150):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert record["decay_epochs"] == list(range(50, 150, 10))
    assert lrs[49] == pytest.approx(1e-4) and lrs[50] == pytest.approx(0.9e-4) and lrs[59] == pytest.approx(0.9e-4)
    assert lrs[60] == pytest.approx(0.81e-4) and lrs[149] == pytest.approx(1e-4 * 0.9 ** 10)
    opt2 = torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))], lr=1e-4)
    _, short = step_decay_after(50, 10, 0.9, epochs=150)(opt2, 30)
    assert short["decay_epochs"] == list(range(10, 30, 2))
    assert short["final_factor"] == pytest.approx(0.9 ** 10, abs=1e-6)


def test_paired_training_resumes_exactly_and_writes_the_card(tmp_path, one_thread):
    data = _write_medical(tmp_path / "harvard_mri_pet", [f"{30000 + i}" for i in range(7)], size=(16, 18))
    common = dict(model="derun", data=(str(data),), batch_size=2, crop=12, steps_per_epoch=1, lr=1e-3,
                  seed=5, model_config=TINY)
    whole = train(TrainConfig(out=str(tmp_path / "whole"), epochs=3, **common))

    class Interrupted(Exception):
        pass

    def crash_in_epoch_2(step, total, logs):
        if logs["epoch"] == 2:
            raise Interrupted

    with pytest.raises(Interrupted):  # killed during epoch 2: last.pt holds epoch 1
        train(TrainConfig(out=str(tmp_path / "parts"), epochs=3, **common), progress=crash_in_epoch_2)
    interrupted_seconds = torch.load(tmp_path / "parts" / "last.pt", weights_only=False)["seconds"]
    steps = []
    parts = train(TrainConfig(out=str(tmp_path / "parts"), epochs=3, resume=True, **common),
                  progress=lambda step, total, logs: steps.append((step, total, logs["epoch"])))
    assert steps == [(2, 3, 2), (3, 3, 3)]  # only the missing epochs run
    a = create_model("derun", checkpoint=whole.with_suffix(".yaml"))
    b = create_model("derun", checkpoint=parts.with_suffix(".yaml"))
    for (k, x), (_, y) in zip(a.state_dict().items(), b.state_dict().items()):
        assert torch.allclose(x, y, atol=1e-7), k  # the same run, interrupted or not

    card = yaml.safe_load(parts.with_suffix(".yaml").read_text())
    t = card["training"]
    assert card["model"] == "derun" and card["inputs"] == ["ir", "vis"] and card["config"]["stages"] == 1
    assert t["split"] == "auto" and t["pairs"] == 6
    assert t["datasets"] == [{"path": str(data), "roles": ["pet", "mri"], "pairs": 6, "pairs_in_dataset": 7,
                              "part": "train"}]
    assert t["epochs"] == 3 and t["recipe_epochs"] == 150 and t["batch_size"] == 2 and t["crop"] == 12
    # 50, 60 ... 140 of 150 epochs scaled to 3: x 3/150, rounded; ten decays in all
    assert t["schedule"]["decay_epochs"] == [1, 1, 1, 2, 2, 2, 2, 2, 3, 3]
    assert [h["epoch"] for h in t["history"]] == [1, 2, 3]  # the history survives the resume
    assert [h["lr"] for h in t["history"]] == pytest.approx([1e-3, 1e-3 * 0.9 ** 3, 1e-3 * 0.9 ** 8])
    assert {"loss", "pixel", "lgde"} <= set(t["history"][-1])
    assert "&id" not in parts.with_suffix(".yaml").read_text()  # plain YAML, no anchors
    # the card's training time covers the interrupted run too, not only the resumed part
    assert t["seconds"] >= interrupted_seconds > 0


def test_training_on_the_held_out_split_is_refused_where_undefined(tmp_path):
    data = _write_ivf(tmp_path / "llvip")
    with pytest.raises(ConfigError, match="no fixed train/held-out split"):
        train(TrainConfig(model="derun", data=(str(data),), out=str(tmp_path / "r"), split="train"))
    result = CliRunner().invoke(app, ["train", "derun", "--data", str(data), "--split", "half",
                                      "-o", str(tmp_path / "o")])
    assert result.exit_code == 1 and "--split must be one of auto, train, fit, all" in result.output


def test_cli_trains_derun_on_pairs(tmp_path, one_thread):
    data = _write_ivf(tmp_path / "ivf", n=2, size=(20, 20))
    out = tmp_path / "run"
    result = CliRunner().invoke(app, ["train", "derun", "--data", str(data), "-o", str(out), "--epochs", "1",
                                      "--steps-per-epoch", "1", "--batch-size", "1", "--crop", "8", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    card = yaml.safe_load((out / "derun.yaml").read_text())
    assert card["training"]["datasets"][0]["part"] == "all" and card["training"]["pairs"] == 2


@pytest.mark.slow
def test_cli_output_quiet_and_the_deprecated_out(tmp_path, one_thread):
    """-o/--output names the run folder; -q prints nothing on success; --out still works for one release,
    with one deprecation line on stderr."""
    data = _write_ivf(tmp_path / "ivf", n=2, size=(20, 20))
    args = ["train", "derun", "--data", str(data), "--epochs", "1", "--steps-per-epoch", "1", "--batch-size", "1",
            "--crop", "8", "-d", "cpu"]
    runner = CliRunner()
    result = runner.invoke(app, [*args, "--output", str(tmp_path / "a")])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "a" / "derun.yaml").is_file() and "deprecated" not in result.stderr
    assert result.stderr.splitlines()[0].startswith("training derun: ")
    assert "wrote " in result.stderr and result.stderr.rstrip().endswith("derun.yaml")

    quiet = runner.invoke(app, [*args, "-o", str(tmp_path / "b"), "-q"])
    assert quiet.exit_code == 0 and quiet.stderr == "" and quiet.stdout == ""
    assert (tmp_path / "b" / "derun.safetensors").is_file()

    old = runner.invoke(app, [*args, "--out", str(tmp_path / "c"), "-q"])
    assert old.exit_code == 0, old.output
    assert (tmp_path / "c" / "derun.yaml").is_file()
    assert len(old.stderr.splitlines()) == 1 and "--out is deprecated" in old.stderr and "-o/--output" in old.stderr

    both = runner.invoke(app, [*args, "--out", str(tmp_path / "c"), "-o", str(tmp_path / "e")])
    assert both.exit_code == 1 and "once" in both.output and not (tmp_path / "e").exists()


# --- medical colour at inference -----------------------------------------------------------------

@pytest.mark.parametrize("name", ["derun", "derun-admm"])
def test_medical_fusion_keeps_the_pet_chroma_and_fuses_its_luma(name, one_thread):
    torch.manual_seed(0)
    h, w = 24, 28
    yy, xx = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    blob = torch.exp(-((yy - 10.0) ** 2 + (xx - 15.0) ** 2) / 40.0)
    pet = torch.stack([0.15 + 0.6 * blob, 0.1 + 0.5 * blob, 0.1 + 0.2 * blob])[None]  # pseudo-colour, in gamut
    mri = (0.4 + 0.3 * torch.rand(1, 1, h, w)).clamp(0, 1)
    model = create_model(name, weights=None, **({"stages": 2} if name == "derun" else {}))
    fused = fuse_images(model, [pet, mri])  # model order: U = PET, V = MRI
    assert fused.shape == (1, 3, h, w)
    out, src = rgb_to_ycbcr(fused), rgb_to_ycbcr(pet)
    inside = ((fused > 1e-4) & (fused < 1 - 1e-4)).all(1)  # pixels the RGB clamp did not touch
    assert inside.float().mean() > 0.9
    assert torch.allclose(out[:, 1:][:, :, inside[0]], src[:, 1:][:, :, inside[0]], atol=1e-5)  # PET chroma kept
    with torch.no_grad():
        expect = model(src[:, :1], mri).clamp(0, 1)  # the Y that is fused: PET's Y as U, MRI as V
        swapped = model(mri, src[:, :1]).clamp(0, 1)
    assert torch.allclose(out[:, :1][inside[None]], expect[inside[None]], atol=1e-5)
    assert (out[:, :1] - src[:, :1]).abs().mean() > 0.01  # the luma changed (MRI detail went in)
    assert (expect - swapped).abs().mean() > 0.01  # and the role order matters


def test_fused_harvard_pet_file_keeps_its_colour(tmp_path, one_thread):
    """A held-out pair of ../shared's harvard_mri_pet (else of a synthetic one: _write_medical) fused
    by derun-admm into an 8-bit file: the PET chroma kept, its luma changed (the pins of the real
    split: test_shared_data)."""
    dataset = SHARED / "datasets" / "harvard_mri_pet"
    if not dataset.exists():
        dataset = _write_medical(tmp_path / "harvard_mri_pet", [f"{25015 + i:05d}" for i in range(5)], size=(64, 64))
    pair = select_pairs(dataset, scan_pairs(dataset).pairs, "test")[0]
    model = create_model("derun-admm")
    fuse_files(model, list(pair.paths), tmp_path / "f.png")
    fused, info = read_image(tmp_path / "f.png")
    pet, _ = read_image(pair.paths[0])
    assert info.channels == 3
    out, src = rgb_to_ycbcr(fused), rgb_to_ycbcr(pet)
    inside = ((fused > 2 / 255) & (fused < 253 / 255)).all(1)[0]
    # rounding R, G, B to 8 bits (<= 0.5 / 255 each) moves Cb = (B - Y) / 1.772 + 0.5 by <= 1 / (1.772 * 255)
    # and Cr = (R - Y) / 1.402 + 0.5 by <= 1 / (1.402 * 255)
    assert (out[0, 1:, inside] - src[0, 1:, inside]).abs().max() < 1 / 255
    mri, _ = read_image(pair.paths[1])
    brain = mri[0, 0] > 20 / 255
    assert brain.float().mean() > 0.2
    assert (out[0, 0][brain] - src[0, 0][brain]).abs().mean() > 0.01  # the luma took in the MRI


def test_roadscene_split_holds_out_every_fifth_pair_and_the_night_pairs(tmp_path):
    from fusecli.train.splits import ROADSCENE_NIGHT, roadscene_split
    stems = [f"FLIR_{i:05d}" for i in range(6970, 7000)]
    train_part, held = roadscene_split(stems)
    assert set(train_part) | set(held) == set(stems) and not set(train_part) & set(held)
    assert set(ROADSCENE_NIGHT) & set(stems) <= set(held)  # FLIR_06974 and FLIR_06995 in this range
    assert "FLIR_06974" in held and "FLIR_06995" in held
    items = [tmp_path / f"{s}.jpg" for s in stems]
    assert [p.stem for p in select_pairs(tmp_path / "roadscene", items, "train")] == train_part
