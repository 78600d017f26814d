"""The shared training-loop helpers: seeding, precision per device, the out-of-memory back-off, the epoch loop
with cancel-keeps-best and early stopping, the EMA teacher, Lookahead, the log and the curve plot."""

import csv
import os
import random
import subprocess
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from satseg_plugin.core.errors import CanceledError, DeviceError
from satseg_plugin.core.fit import (
    BestModel,
    FittedSchedule,
    OomBackoff,
    Precision,
    choose_precision,
    ema_model,
    lookahead,
    run_epochs,
    seed_everything,
    split_batches,
    write_log,
)
from satseg_plugin.core.plots import plot_training_curves
from satseg_plugin.core.progress import RecordingFeedback

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def draws(seed):
    rng, generator = seed_everything(seed)
    return (random.random(), float(np.random.rand()), float(torch.rand(())), float(rng.random()),
            float(torch.rand((), generator=generator)))


def test_seeding_makes_every_generator_repeat():
    first, again, other = draws(3), draws(3), draws(4)
    assert first == again
    assert all(a != b for a, b in zip(first, other))
    rng, generator = seed_everything(3)
    assert generator.device.type == "cpu"  # draws are made on the CPU and copied to a GPU
    assert rng.random() == np.random.default_rng(3).random()


def test_split_batches_never_leaves_a_batch_of_one():
    assert [b.tolist() for b in split_batches(np.arange(7), 3)] == [[0, 1, 2], [3, 4, 5, 6]]
    assert [b.tolist() for b in split_batches(np.arange(4), 3)] == [[0, 1, 2, 3]]
    assert [b.tolist() for b in split_batches(np.arange(6), 3)] == [[0, 1, 2], [3, 4, 5]]
    assert [b.tolist() for b in split_batches(np.arange(1), 3)] == [[0]]


def test_precision_is_float32_on_the_cpu_and_mixed_on_cuda(monkeypatch):
    feedback = RecordingFeedback()
    cpu = choose_precision(torch.device("cpu"), feedback=feedback)
    assert (cpu.dtype, cpu.scaler, cpu.name) == (None, None, "float32") and feedback.infos == []
    with cpu.autocast():
        assert torch.ones(2, 2).matmul(torch.ones(2, 2)).dtype == torch.float32
    assert choose_precision(torch.device("cuda"), amp=False).dtype is None

    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (9, 0))
    ampere = choose_precision(torch.device("cuda"), feedback=feedback)
    assert (ampere.dtype, ampere.scaler, ampere.name) == (torch.bfloat16, None, "bfloat16 autocast")
    assert feedback.infos == ["Mixed precision: bfloat16 autocast."]

    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (7, 5))
    with pytest.warns(UserWarning) if not torch.cuda.is_available() else _nothing():
        turing = choose_precision(torch.device("cuda"))
    assert turing.dtype == torch.float16 and isinstance(turing.scaler, torch.amp.GradScaler)
    assert turing.name == "float16 autocast with gradient scaling"


class _nothing:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def test_precision_step_clears_old_gradients_and_steps():
    weight = torch.nn.Parameter(torch.tensor([1.0]))
    optimizer = torch.optim.SGD([weight], lr=0.5)
    weight.grad = torch.tensor([100.0])  # a stale gradient must not leak into the step
    Precision("cpu").step((weight * 2).sum(), optimizer)
    assert float(weight.detach()) == pytest.approx(0.0)  # 1 - 0.5 * 2


def fake_step(limit, tried):
    """A step that runs out of CUDA memory above ``limit`` items, like a real one."""

    def step(size):
        tried.append(size)
        if size > limit:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (simulated)")
        return f"ran {size}"

    return step


def test_oom_halves_the_batch_until_it_fits_and_keeps_the_smaller_size():
    feedback, tried = RecordingFeedback(), []
    backoff = OomBackoff(32, feedback, "crop", "Lower PATCH_SIZE.")
    assert backoff.run(fake_step(5, tried)) == "ran 4"
    assert tried == [32, 16, 8, 4] and backoff.batch_size == 4
    assert feedback.warnings == [f"CUDA out of memory: retrying with batches of {n} crops." for n in (16, 8, 4)]
    assert backoff.run(fake_step(5, tried)) == "ran 4" and tried[-1] == 4  # no new failures: no new halving


def test_oom_gives_up_at_the_minimum_with_what_to_change():
    backoff = OomBackoff(8, RecordingFeedback(), "patch", "Use smaller patches.", minimum=2)
    with pytest.raises(DeviceError, match="with 2 patches per batch. Use smaller patches."):
        backoff.run(fake_step(1, []))
    with pytest.raises(DeviceError, match="with one crop per batch"):
        OomBackoff(4, RecordingFeedback(), "crop", "Lower PATCH_SIZE.").run(fake_step(0, []))


def test_oom_in_a_fixed_batch_trains_on_its_pieces_once_each():
    seen, feedback = [], RecordingFeedback()

    def step(piece):
        if len(piece) > 3:
            raise torch.cuda.OutOfMemoryError("simulated")
        seen.append(piece.tolist())
        return len(piece)

    backoff = OomBackoff(10, feedback, "patch", "", minimum=2)
    assert backoff.run_batch(np.arange(10), step) == [2, 3, 2, 3]
    # 10 fails: halves of 5; the first half fails: pieces of 2 (a last piece of one joins the one before)
    assert seen == [[0, 1], [2, 3, 4], [5, 6], [7, 8, 9]]
    assert backoff.batch_size == 2 and len(feedback.warnings) == 2
    assert backoff.run_batch(np.arange(3), step) == [3]  # a later batch is cut at the smaller size at once


def tiny_model(value):
    model = torch.nn.Linear(1, 1)
    with torch.no_grad():
        model.weight.fill_(value)
    return model


def test_cancel_keeps_the_best_model_so_far():
    feedback, best = RecordingFeedback(), BestModel()
    model = tiny_model(0.0)
    scores = {1: 0.5, 2: 0.7, 3: 0.6}

    def epoch(number):
        if number == 4:
            raise CanceledError()
        with torch.no_grad():
            model.weight.fill_(number)
        best.offer(scores[number], model, number)

    run = run_epochs(10, epoch, feedback, best, metric="validation Dice", keep_best_on_cancel=True)
    assert (run.canceled, run.epochs_run, best.epoch, best.score) == (True, 3, 2, 0.7)
    assert feedback.warnings == ["Canceled during epoch 4: keeping the best model so far (epoch 2, validation "
                                 "Dice 0.7000)."]
    best.restore(model)
    assert float(model.weight.detach()) == 2.0  # the kept weights are a copy, not the live tensors

    with pytest.raises(CanceledError):  # trainers that write nothing on cancel
        run_epochs(10, epoch, feedback, BestModel(), keep_best_on_cancel=False)
    with pytest.raises(CanceledError):  # nothing kept yet: nothing to save
        run_epochs(10, lambda n: epoch(4), feedback, BestModel(), keep_best_on_cancel=True)


def test_early_stop_after_patience_epochs_without_a_better_score():
    feedback, best = RecordingFeedback(), BestModel()
    model = tiny_model(0.0)
    scores = [0.5, 0.8, 0.8, 0.7, 0.9]
    run = run_epochs(5, lambda n: best.offer(scores[n - 1], model, n), feedback, best, patience=2,
                     metric="validation Dice")
    assert (run.epochs_run, run.stopped_early, best.epoch) == (4, True, 2)  # a tie is not better
    assert feedback.infos == ["Early stop: no better validation Dice for 2 epochs."]
    later = BestModel(ties_to_later=True)
    for number, score in enumerate([(0.8, -1.0), (0.8, -1.0), (0.7, 0.0)], start=1):
        later.offer(score, model, number)
    assert later.epoch == 2


def test_stop_rule_ends_the_run_with_its_message():
    fb, seen = RecordingFeedback(), []
    run = run_epochs(10, seen.append, fb, stop=lambda epoch: "schedule done" if epoch == 3 else None)
    assert seen == [1, 2, 3] and run.epochs_run == 3 and run.stopped_early
    assert "schedule done" in fb.infos


def _optimizer(lr=1.0):
    return torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=lr)


def test_cosine_schedule_warms_up_peaks_and_anneals_to_zero():
    opt = _optimizer()
    schedule = FittedSchedule(opt, 100, "cosine", warmup=0.1)
    lrs = []
    while not schedule.finished:
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        schedule.step()
    assert len(lrs) == 100 and schedule.steps == 100
    assert lrs[0] == pytest.approx(0.1) and lrs[9] == pytest.approx(1.0)  # linear warm-up over 10 steps
    assert all(a >= b for a, b in zip(lrs[9:], lrs[10:]))  # then never rises
    assert lrs[-1] < 0.001 and opt.param_groups[0]["lr"] == pytest.approx(0.0)


def test_step_schedule_multiplies_by_gamma_every_step_every():
    opt = _optimizer()
    schedule = FittedSchedule(opt, 30, "step", step_every=10, gamma=0.5)
    lrs = []
    for _ in range(30):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        schedule.step()
    assert lrs[0] == lrs[9] == 1.0 and lrs[10] == lrs[19] == 0.5 and lrs[29] == 0.25


def test_time_limit_shortens_the_schedule_never_lengthens_it():
    opt = _optimizer()
    schedule = FittedSchedule(opt, 1000, "cosine", max_seconds=60.0)
    for _ in range(10):
        opt.step()
        schedule.step()
    assert schedule.fit_time(elapsed=100.0) == 10  # 10 s a step: 6 steps fit, 10 are done: it ends now
    assert schedule.finished
    schedule = FittedSchedule(_optimizer(), 1000, "cosine", max_seconds=60.0)
    for _ in range(10):
        schedule.step()
    assert schedule.fit_time(elapsed=2.0) == 300  # 0.2 s a step: 300 steps fit in 60 s
    assert schedule.fit_time(elapsed=1.0) is None  # faster later: the schedule is not lengthened again
    assert schedule.total == 300
    assert FittedSchedule(_optimizer(), 50, max_seconds=0.0).fit_time(1e9) is None  # no limit


def test_ema_teacher_warms_up_then_uses_the_decay():
    student = tiny_model(0.0)
    student.register_buffer("count", torch.zeros(()))
    teacher = ema_model(student, decay=0.6)
    assert not any(p.requires_grad for p in teacher.module.parameters())
    expected = 0.0
    for step, value in enumerate([1.0, 2.0, 4.0], start=1):
        with torch.no_grad():
            student.weight.fill_(value)
            student.count.fill_(step)
        teacher.update_parameters(student)
        decay = min(0.6, 1 - 1 / (step + 1))  # 0.5 (a plain mean with the start), then 0.6
        expected = decay * expected + (1 - decay) * value
        assert float(teacher.module.weight) == pytest.approx(expected)
        assert float(teacher.module.count) == step  # buffers are copied, not averaged
    assert teacher.n_averaged.device.type == "cpu"


def test_lookahead_moves_slow_weights_half_way_every_k_steps():
    weight = torch.nn.Parameter(torch.zeros(1))
    inner = torch.optim.SGD([weight], lr=1.0)
    optimizer = lookahead(inner, k=2, alpha=0.5)
    seen = []
    for _ in range(4):
        optimizer.zero_grad()
        (-weight).sum().backward()  # gradient -1: every fast step adds 1
        optimizer.step()
        seen.append(float(weight.detach()))
    # fast 1, 2 -> slow 0 + 0.5 * (2 - 0) = 1; fast 2, 3 -> slow 1 + 0.5 * (3 - 1) = 2
    assert seen == [1.0, 1.0, 2.0, 2.0]
    assert optimizer.param_groups is inner.param_groups
    with pytest.raises(ValueError):
        lookahead(torch.optim.SGD([weight], lr=1.0), k=0)


def test_lookahead_keeps_adam_state_intact():
    weight = torch.nn.Parameter(torch.zeros(3))
    optimizer = lookahead(torch.optim.RAdam([weight], lr=0.1), k=2)
    for _ in range(5):
        optimizer.zero_grad()
        ((weight - 1.0) ** 2).sum().backward()
        optimizer.step()
    state = optimizer.state_dict()["state"][0]
    assert int(state["step"]) == 5 and "exp_avg" in state
    assert 0.0 < float(weight.detach()[0]) < 1.0


def test_log_is_written_only_when_asked_for_and_non_empty(tmp_path):
    rows = [{"epoch": 1, "loss": 0.5}, {"epoch": 2, "loss": 0.25}]
    assert write_log(None, rows) is None and write_log(str(tmp_path / "x.csv"), []) is None
    path = write_log(str(tmp_path / "log.csv"), rows)
    assert path == os.path.abspath(tmp_path / "log.csv")
    with open(path, newline="") as handle:
        assert list(csv.DictReader(handle)) == [{"epoch": "1", "loss": "0.5"}, {"epoch": "2", "loss": "0.25"}]
    assert sorted(os.listdir(tmp_path)) == ["log.csv"]


def test_training_curves_are_a_png_drawn_without_pyplot(tmp_path):
    out = tmp_path / "curve.png"
    code = (
        "import sys\n"
        "from satseg_plugin.core.plots import plot_training_curves\n"
        "rows = [{'epoch': e, 'train_loss': 1 / e, 'val_loss': 1.2 / e, 'val_dice': 0.2 * e} for e in (1, 2, 3)]\n"
        f"plot_training_curves({str(out)!r}, rows, [('train_loss', 'train', 'tab:blue'),\n"
        "    ('val_loss', 'validation', 'tab:orange')], 'loss', [('val_dice', 'Dice', 'tab:green')], 'Dice', (0, 1))\n"
        "assert 'matplotlib.pyplot' not in sys.modules\n")
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
    subprocess.run([sys.executable, "-c", code], check=True, cwd=root)
    data = out.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    assert (width, height) == (700, 400)
    assert os.listdir(tmp_path) == ["curve.png"]  # staged: no temporary file left
    # and in this process, a history of one epoch (a single point per curve) plots too
    single = plot_training_curves(str(tmp_path / "one.png"), [{"epoch": 1, "loss": 0.3}], [("loss", "loss", "k")],
                                  "loss")
    assert open(single, "rb").read(8) == b"\x89PNG\r\n\x1a\n"
