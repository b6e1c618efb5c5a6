"""Staged FRUFN / EFRUFN training (sequential gradient transfer): a tiny 3-stage run, teachers, resume, CLI."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch
import yaml
from safetensors.torch import load_file
from typer.testing import CliRunner

from fusecli import create_model, fuse_images
from fusecli.color import merge_luma, split_luma
from fusecli.cli import app
from fusecli.errors import CheckpointError, ConfigError, UnknownNameError
from fusecli.models.colornet import ColorNet
from fusecli.train.frufn import StagedTrainConfig, parse_stages, stage_paths, train_stages

@pytest.fixture(autouse=True)
def _one_thread():
    """One intra-op thread: on the shared 2-core machine two threads made these runs ~18x slower (spin-waits)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


TINY = {"frufn": {"channels": 8, "heads": 2, "depth": 1, "cells": 2},
        "efrufn": {"channels": 8, "heads": 2, "depth": 1, "solver_iters": 3}}


def _data(root, n=3):
    """sharp/: colour images; ivf/ir + ivf/vis: aligned pairs (48 x 56)."""
    rng = np.random.default_rng(0)
    (root / "sharp").mkdir(parents=True)
    for role in ("ir", "vis"):
        (root / "ivf" / role).mkdir(parents=True)
    for i in range(n):
        img = cv2.GaussianBlur(rng.integers(0, 256, (48, 56, 3), dtype=np.uint8), (3, 3), 0)
        cv2.imwrite(str(root / "sharp" / f"{i}.png"), img)
        cv2.imwrite(str(root / "ivf" / "ir" / f"{i}.png"), img[:, :, 0])
        cv2.imwrite(str(root / "ivf" / "vis" / f"{i}.png"), img)
    return root


def _config(tmp_path, model="frufn", **kw):
    data = _data(tmp_path / "data") if not (tmp_path / "data").exists() else tmp_path / "data"
    base = dict(model=model, out=str(tmp_path / "run"), sharp_data=(str(data / "sharp"),),
                ivf_data=(str(data / "ivf"),), epochs=1, batch_size=2, crop=32, steps_per_epoch=2,
                color_epochs=1, seed=1, model_config=TINY[model])
    return StagedTrainConfig(**{**base, **kw})


def test_three_stages_write_cards_and_teach_each_other(tmp_path):
    config = _config(tmp_path, epochs=2)
    logs, seen = [], {}

    def on_stage_end(stage, student, teacher, colornet):
        seen[stage] = True
        if stage == "mfif":
            assert teacher is None and colornet is None
            return
        prev = {"meif": "mfif", "ivf": "meif"}[stage]
        previous = load_file(str(stage_paths(config.out, "frufn", prev)["weights"]))
        # the teacher is the previous stage's output, frozen and unchanged by this stage's training
        assert not any(p.requires_grad for p in teacher.parameters())
        assert all(torch.equal(v, previous[k]) for k, v in teacher.state_dict().items())
        # the student started from it and has moved away
        assert any(not torch.equal(v, previous[k]) for k, v in student.state_dict().items())
        assert isinstance(colornet, ColorNet) == (stage == "meif")

    cards = train_stages(config, progress=lambda s, t, l: logs.append(l), on_stage_end=on_stage_end)
    assert list(cards) == ["mfif", "meif", "ivf"] and set(seen) == {"mfif", "meif", "ivf"}

    # stage 1: one warm-up epoch of source reconstruction, then the SSIM loss
    mfif = [l for l in logs if l["stage"] == "mfif"]
    assert [("reconstruction" in l, "ssim_loss" in l) for l in mfif] == [(True, False)] * 2 + [(False, True)] * 2
    # stage 2: the student starts as a copy of the teacher, so the first gradient-transfer loss is 0
    meif = [l for l in logs if l["stage"] == "meif" and l["phase"] == "fusion"]
    assert meif[0]["transfer"] == 0.0 and all(np.isfinite(l["loss"]) for l in logs)
    assert [l["phase"] for l in logs if l["stage"] == "meif"].count("colornet") == 2
    assert {"intensity", "texture", "structure", "std", "transfer"} <= set(logs[-1])

    read = {s: yaml.safe_load(p.read_text()) for s, p in cards.items()}
    assert [read[s]["name"] for s in cards] == ["frufn.mfif", "frufn.meif", "frufn.ivf"]
    assert read["mfif"]["training"]["teacher"] is None and read["mfif"]["training"]["synthesis"]["seed"] == 1
    assert read["meif"]["training"]["synthesis"]["kind"] == "multi_exposure"
    assert read["meif"]["training"]["teacher"]["sha256"] == read["mfif"]["sha256"]
    assert read["ivf"]["training"]["teacher"]["sha256"] == read["meif"]["sha256"]
    assert read["ivf"]["training"]["pairs"] == 3 and read["ivf"]["training"]["epochs"] == 2
    assert read["meif"]["inputs"] == ["under", "over"] and read["ivf"]["task"] == ["ir-vis"]

    # every stage's weights load into the registry model and fuse any size
    for stage, card in cards.items():
        model = create_model("frufn", checkpoint=card)
        assert model(torch.rand(1, 1, 20, 27), torch.rand(1, 1, 20, 27)).shape == (1, 1, 20, 27)
    net = ColorNet()
    colornet_file = stage_paths(config.out, "frufn", "meif")["colornet"]
    net.load_state_dict(load_file(str(colornet_file)))
    assert read["meif"]["colornet"]["file"] == colornet_file.name

    # the meif card brings its ColorNet as the model's colour step: a colour exposure pair gets the
    # predicted chroma (Remark 1)
    meif = create_model("frufn", checkpoint=cards["meif"])
    assert isinstance(meif.colour_step.net, ColorNet) and "ColorNet" in meif.weights_info
    assert all(torch.equal(v, net.state_dict()[k]) for k, v in meif.colour_step.net.state_dict().items())
    a, b = torch.rand(1, 3, 20, 27), torch.rand(1, 3, 20, 27)
    fused, y = fuse_images(meif, [a, b]), fuse_images(meif, [a, b], gray=True)
    with torch.no_grad():
        want = merge_luma(y, meif.colour_step.net(y, split_luma(a)[1], split_luma(b)[1]).clamp(0, 1))
    assert fused.shape == (1, 3, 20, 27) and torch.allclose(fused, want, atol=1e-6)
    assert not torch.allclose(split_luma(fused)[1], split_luma(b)[1], atol=1e-3)  # not a copy of one source
    assert create_model("frufn", checkpoint=cards["ivf"]).colour_step is None
    # a ColorNet file that does not match its card is refused
    bad = tmp_path / "run" / "meif" / "bad.yaml"
    bad.write_text(cards["meif"].read_text().replace(read["meif"]["colornet"]["sha256"], "0" * 64))
    with pytest.raises(CheckpointError, match="ColorNet|sha256"):
        create_model("frufn", checkpoint=bad)


def test_efrufn_stages_and_resume(tmp_path):
    config = _config(tmp_path, model="efrufn", stages=("mfif", "meif"), color_epochs=0)
    train_stages(config)
    meif_card = stage_paths(config.out, "efrufn", "meif")["card"]
    first = yaml.safe_load(meif_card.read_text())
    assert "colornet" not in first and first["training"]["teacher"] is not None

    # resume with one more epoch: each stage continues from its last.pt (steps 3 and 4 of 4)
    steps = []
    train_stages(StagedTrainConfig(**{**config.__dict__, "epochs": 2, "resume": True}),
                 progress=lambda s, t, l: steps.append((l["stage"], s, l["epoch"])))
    assert steps == [("mfif", 3, 2), ("mfif", 4, 2), ("meif", 3, 2), ("meif", 4, 2)]
    assert torch.load(stage_paths(config.out, "efrufn", "meif")["last"], weights_only=False)["epoch"] == 2
    # resuming a finished run trains nothing and keeps the weights
    before = yaml.safe_load(meif_card.read_text())["sha256"]
    steps.clear()
    train_stages(StagedTrainConfig(**{**config.__dict__, "epochs": 2, "resume": True}),
                 progress=lambda s, t, l: steps.append(s))
    assert steps == [] and yaml.safe_load(meif_card.read_text())["sha256"] == before


def test_a_later_stage_alone_needs_its_teacher(tmp_path):
    config = _config(tmp_path, stages=("ivf",))
    with pytest.raises(ConfigError, match="--teacher"):
        train_stages(config)
    train_stages(_config(tmp_path, stages=("mfif", "meif"), color_epochs=0, steps_per_epoch=1))
    teacher = stage_paths(tmp_path / "run", "frufn", "meif")["card"]
    cards = train_stages(_config(tmp_path, stages=("ivf",), out=str(tmp_path / "other"), teacher=str(teacher),
                                 steps_per_epoch=1))
    assert yaml.safe_load(cards["ivf"].read_text())["training"]["teacher"]["file"] == str(teacher)


def test_stage_lists_and_errors(tmp_path):
    assert parse_stages("mfif, meif") == ("mfif", "meif") and parse_stages("ivf") == ("ivf",)
    for bad in ("meif,mfif", "mfif,ivf", "mfif,mfif", ""):
        with pytest.raises(ConfigError):
            parse_stages(bad)
    with pytest.raises(UnknownNameError):
        parse_stages("mef")
    with pytest.raises(UnknownNameError):
        train_stages(StagedTrainConfig(model="auif", out=str(tmp_path)))
    with pytest.raises(ConfigError, match="--sharp-data"):
        train_stages(StagedTrainConfig(model="frufn", out=str(tmp_path), stages=("mfif",)))


@pytest.mark.slow
def test_cli_trains_a_stage(tmp_path):
    data = _data(tmp_path / "data")
    out = tmp_path / "cli"
    args = ["train", "frufn", "--stages", "mfif", "--sharp-data", str(data / "sharp"), "--output", str(out),
            "--epochs", "1", "--steps-per-epoch", "1", "--crop", "32", "--device", "cpu"]
    # the tiny config is a library option; the CLI builds the published model: one step on 32 px is quick enough
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert (out / "mfif" / "frufn.mfif.yaml").is_file() and (out / "mfif" / "last.pt").is_file()
    result = CliRunner().invoke(app, ["train", "frufn", "--stages", "ivf,mfif", "-o", str(out)])
    assert result.exit_code == 1 and "order" in result.output
    result = CliRunner().invoke(app, ["train", "auif", "--stages", "mfif", "--data", str(data / "sharp")])
    assert result.exit_code == 1 and "frufn" in result.output


@pytest.mark.parametrize("extra, message", [
    (["--snapshots"], "--snapshots is not used by frufn's staged training"),
    (["--init", "x.yaml"], "--init is not used by frufn's staged training"),
])
def test_cli_refuses_recipe_only_options_for_staged_training(tmp_path, extra, message):
    from typer.testing import CliRunner

    from fusecli.cli import app
    result = CliRunner().invoke(app, ["train", "frufn", "-o", str(tmp_path / "o"), *extra])
    assert result.exit_code == 1 and message in result.output and "Traceback" not in result.output
    assert not (tmp_path / "o").exists()
