"""The one training loop (fusecli.train.loop.fit) on toy models: gradient clipping, lr warm-up, loss
warm-up, exact resume, the frozen teacher, per-epoch weight snapshots."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from fusecli.errors import CheckpointError
from fusecli.train import Step, fit, load_checkpoint
from fusecli.train.loop import scale_milestones


def _sgd(model, lr=1.0):
    optimizer = torch.optim.SGD(model.parameters(), lr=lr)
    return optimizer, torch.optim.lr_scheduler.MultiStepLR(optimizer, [2], 0.5)


def _linear_step(scale):
    """loss = scale * sum(w): every gradient entry is ``scale``."""
    return lambda s: (scale * s.model.weight.sum(), {})


def test_gradient_clipping_bounds_each_update(tmp_path):
    updates = {}
    for clip in (None, 0.5):
        model = nn.Linear(4, 1, bias=False)
        before = model.weight.detach().clone()
        optimizer, scheduler = _sgd(model)
        fit(model, _linear_step(10.0), optimizer, scheduler, epochs=1, steps=1, checkpoint=tmp_path / f"{clip}.pt",
            clip=clip)
        updates[clip] = torch.linalg.vector_norm(model.weight.detach() - before).item()
    assert updates[None] == pytest.approx(20.0, rel=1e-5)  # |grad| = 10 * sqrt(4), lr 1
    assert updates[0.5] == pytest.approx(0.5, rel=1e-4)  # clipped to the max norm


def test_lr_warmup_ramps_the_step_then_leaves_the_schedule_alone(tmp_path):
    model = nn.Linear(1, 1, bias=False)
    nn.init.zeros_(model.weight)
    optimizer, scheduler = _sgd(model)
    moves = []

    def record(i, total, logs):
        moves.append(-model.weight.item())

    run = fit(model, _linear_step(1.0), optimizer, scheduler, epochs=3, steps=2, checkpoint=tmp_path / "last.pt",
              lr_warmup_steps=4, progress=record)
    steps = np.diff([0.0, *moves])
    # lr 1 x i/4 for steps 1-4; then the schedule's own lr: x0.5 from epoch 3 (milestone 2)
    assert steps == pytest.approx([0.25, 0.5, 0.75, 1.0, 0.5, 0.5])
    assert [h["lr"] for h in run.history] == [1.0, 1.0, 0.5]  # the scheduled lr, not the ramped one
    assert optimizer.param_groups[0]["lr"] == 0.5  # one decay after three epochs; nothing left ramped


def test_loss_warmup_flags_the_first_epochs_and_iterations_count_the_whole_run(tmp_path):
    model = nn.Linear(1, 1)
    optimizer, scheduler = _sgd(model, lr=1e-3)
    seen = []

    def step(s: Step):
        seen.append((s.epoch, s.iteration, s.warmup, s.model.training))
        return s.model.weight.sum(), {"term": 1.0}

    logs = []
    run = fit(model.eval(), step, optimizer, scheduler, epochs=3, steps=2, checkpoint=tmp_path / "last.pt",
              warmup_epochs=1, progress=lambda i, n, log: logs.append((i, n, log)), tags={"stage": "x"})
    assert seen == [(0, 1, True, True), (0, 2, True, True), (1, 3, False, True), (1, 4, False, True),
                    (2, 5, False, True), (2, 6, False, True)]
    assert [i for i, _, _ in logs] == [1, 2, 3, 4, 5, 6] and {n for _, n, _ in logs} == {6}
    assert list(logs[0][2]) == ["stage", "epoch", "loss", "term"] and logs[-1][2]["epoch"] == 3
    assert [h["epoch"] for h in run.history] == [1, 2, 3] and run.history[0]["term"] == 1.0
    assert run.milestones == [2] and run.start_epoch == 0


class _Interrupted(Exception):
    pass


def _noisy_run(tmp_path, out, *, epochs, resume=False, stop_at=None, rng_key="rng"):
    """A model fitted to noise drawn from a seeded generator: the result depends on every draw."""
    torch.manual_seed(0)
    model = nn.Linear(3, 1)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.05)
    scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, [1, 1, 3], 0.5)  # a repeated milestone
    generator = torch.Generator().manual_seed(7)
    iterations = []

    def step(s: Step):
        x = torch.rand(4, 3, generator=generator)
        y = torch.rand(4, 1) + x.sum(1, keepdim=True)  # the global generator too
        return ((s.model(x) - y) ** 2).mean(), {}

    def progress(i, total, logs):
        iterations.append(i)
        if i == stop_at:
            raise _Interrupted

    run = fit(model, step, optimizer, scheduler, epochs=epochs, steps=3, checkpoint=tmp_path / out / "last.pt",
              resume=resume, generators={"crops": generator}, rng_key=rng_key, progress=progress,
              record={"config": {"run": out}})
    return model, run, iterations


@pytest.mark.parametrize("rng_key", ["rng", None])
def test_resume_continues_the_same_steps(tmp_path, rng_key):
    whole, whole_run, _ = _noisy_run(tmp_path, "whole", epochs=4, rng_key=rng_key)
    with pytest.raises(_Interrupted):  # killed in epoch 3: last.pt holds epoch 2
        _noisy_run(tmp_path, "parts", epochs=4, stop_at=8, rng_key=rng_key)
    state = load_checkpoint(tmp_path / "parts" / "last.pt", ("model", "epoch", "seconds", "config"))
    assert state["epoch"] == 2 and state["config"] == {"run": "parts"}
    assert ("rng" in state) == (rng_key == "rng") and ("crops" in state) == (rng_key is None)
    parts, parts_run, iterations = _noisy_run(tmp_path, "parts", epochs=4, resume=True, rng_key=rng_key)
    assert iterations == [7, 8, 9, 10, 11, 12] and parts_run.start_epoch == 2
    assert all(torch.equal(a, b) for a, b in zip(whole.state_dict().values(), parts.state_dict().values()))
    assert parts_run.history == whole_run.history  # the history survives, lr decays included
    assert parts_run.milestones == [1, 1, 3] and parts_run.seconds() >= state["seconds"]
    # resuming a finished run trains nothing
    _, done, iterations = _noisy_run(tmp_path, "parts", epochs=4, resume=True, rng_key=rng_key)
    assert iterations == [] and done.start_epoch == 4


def test_resume_refuses_a_state_of_another_model(tmp_path):
    _noisy_run(tmp_path, "run", epochs=1)
    model = nn.Linear(5, 1)
    optimizer, scheduler = _sgd(model)
    with pytest.raises(CheckpointError, match="does not fit this run"):
        fit(model, _linear_step(1.0), optimizer, scheduler, epochs=2, steps=1, checkpoint=tmp_path / "run" / "last.pt",
            resume=True, generators={"crops": torch.Generator()})


def test_the_teacher_is_frozen_and_gets_no_gradient(tmp_path):
    torch.manual_seed(0)
    student, teacher = nn.Linear(3, 3), nn.Sequential(nn.Linear(3, 3), nn.Dropout(0.5))
    teacher_before = {k: v.clone() for k, v in teacher.state_dict().items()}
    student_before = {k: v.clone() for k, v in student.state_dict().items()}
    optimizer, scheduler = _sgd(student, lr=0.1)
    modes = []

    def step(s: Step):
        x = torch.rand(2, 3)
        modes.append(s.teacher.training)
        return ((s.model(x) - s.teacher(x)) ** 2).mean(), {}  # called with autograd on: still no gradient

    fit(student, step, optimizer, scheduler, epochs=2, steps=2, checkpoint=tmp_path / "last.pt", teacher=teacher)
    assert modes == [False] * 4  # eval mode: the dropout is off
    assert all(p.grad is None and not p.requires_grad for p in teacher.parameters())
    assert all(torch.equal(v, teacher_before[k]) for k, v in teacher.state_dict().items())
    assert any(not torch.equal(v, student_before[k]) for k, v in student.state_dict().items())


def test_milestones_scale_with_the_epochs():
    assert scale_milestones([41, 81], 8, 80) == [4, 8]
    assert scale_milestones([1, 2], 3, 150) == [1]  # merged: one decay
    assert scale_milestones(range(50, 150, 10), 3, 150, repeats=True) == [1, 1, 1, 2, 2, 2, 2, 2, 3, 3]


def test_snapshots_keep_every_epochs_weights(tmp_path):
    from safetensors.torch import load_file

    model = nn.Linear(2, 1, bias=False)
    optimizer, scheduler = _sgd(model, lr=0.1)
    seen = []

    def step(s):
        if s.iteration % 2 == 1:  # first step of an epoch: the weights the previous epoch left
            seen.append(s.model.weight.detach().clone())
        return s.model.weight.sum(), {}

    fit(model, step, optimizer, scheduler, epochs=3, steps=2, checkpoint=tmp_path / "run" / "last.pt",
        snapshots=True)
    files = sorted(p.name for p in (tmp_path / "run").glob("epoch-*.safetensors"))
    assert files == ["epoch-001.safetensors", "epoch-002.safetensors", "epoch-003.safetensors"]
    after = [load_file(tmp_path / "run" / f)["weight"] for f in files]
    assert torch.equal(after[0], seen[1]) and torch.equal(after[1], seen[2])  # epoch 1 ends where 2 starts
    assert torch.equal(after[2], model.weight.detach())
    fit(nn.Linear(2, 1), step, *_sgd(nn.Linear(2, 1)), epochs=1, steps=1, checkpoint=tmp_path / "plain" / "last.pt")
    assert [p.name for p in (tmp_path / "plain").iterdir()] == ["last.pt"]  # none unless asked
