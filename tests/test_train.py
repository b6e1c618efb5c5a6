"""The training command: a short run writes loadable weights and a card; resume continues it."""

from __future__ import annotations

import numpy as np
import cv2
import torch
import yaml

from fusecli import create_model
from fusecli.train import TrainConfig, train
from fusecli.train.data import RandomResizedCrops, collect_images


def _dataset(root, n=3):
    rng = np.random.default_rng(0)
    for role in ("ir", "vis"):
        (root / role).mkdir(parents=True)
        for i in range(n):
            img = cv2.GaussianBlur(rng.integers(0, 256, (48, 64), dtype=np.uint8), (5, 5), 0)
            cv2.imwrite(str(root / role / f"{i:02d}.png"), img)
    return root


def test_short_training_run_writes_weights_card_and_resumes(tmp_path):
    data = _dataset(tmp_path / "data")
    out = tmp_path / "run"
    config = TrainConfig(model="auif", data=(str(data),), out=str(out), epochs=1, batch_size=2, crop=32,
                         steps_per_epoch=2, seed=3)
    losses = []
    final = train(config, progress=lambda step, total, logs: losses.append(logs["loss"]))
    assert len(losses) == 2 and all(np.isfinite(losses))
    card = yaml.safe_load((out / "auif.yaml").read_text())
    assert card["model"] == "auif" and len(card["sha256"]) == 64 and card["training"]["images"] == 6
    model = create_model("auif", checkpoint=final)
    out_img = model(torch.rand(1, 1, 32, 32), torch.rand(1, 1, 32, 32))
    assert out_img.shape == (1, 1, 32, 32)

    # resume: epoch 2 starts from last.pt (epoch 1), so only 2 more steps run
    steps = []
    train(TrainConfig(**{**config.__dict__, "epochs": 2, "resume": True}),
          progress=lambda step, total, logs: steps.append((step, logs["epoch"])))
    assert steps == [(3, 2), (4, 2)]


def test_same_seed_same_crops():
    images = [torch.rand(1, 40, 50), torch.rand(1, 60, 30)]
    a = RandomResizedCrops(images, 16, generator=torch.Generator().manual_seed(5)).batch(4)
    b = RandomResizedCrops(images, 16, generator=torch.Generator().manual_seed(5)).batch(4)
    assert a.shape == (4, 1, 16, 16) and torch.equal(a, b)


def test_collect_images_reads_role_folders(tmp_path):
    data = _dataset(tmp_path / "d", n=2)
    (data / "other").mkdir()
    cv2.imwrite(str(data / "other" / "x.png"), np.zeros((20, 20), np.uint8))
    assert len(collect_images([data], ("ir", "vis"))) == 4
    assert len(collect_images([data / "ir"])) == 2
