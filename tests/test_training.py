"""Training: optimisers, lr halving, teacher-forcing draws, clipping, overfitting a tiny corpus."""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import pytest
import torch
from torch import nn

from seq2seq.batching import ParallelCorpus, iterate_batches
from seq2seq.model import Seq2Seq
from seq2seq.precision import bf16_problem
from seq2seq.training import (
    draw_teacher_forcing,
    evaluate_loss,
    fit,
    lr_for_epoch,
    make_generator,
    make_optimizer,
    seed_epoch,
    set_lr,
    train_epoch,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@dataclass
class Spec:
    optimizer: str = "adam"
    lr: float = 1e-3
    lr_halving_start: int | None = None


def _corpus(n: int = 20, seed: int = 0) -> ParallelCorpus:
    g = torch.Generator().manual_seed(seed)
    lens = torch.randint(2, 8, (n,), generator=g).tolist()
    src = [torch.randint(4, 30, (k,), generator=g).tolist() for k in lens]
    tgt = [[4 + (t * 7) % 26 for t in s[::-1]] for s in src]  # a deterministic function of src
    return ParallelCorpus.from_lists(src, tgt)


def _model(seed: int = 0, dropout: float = 0.0) -> Seq2Seq:
    torch.manual_seed(seed)
    return Seq2Seq(30, 30, emb_dim=32, hidden_dim=64, num_layers=1, dropout=dropout)


def test_teacher_forcing_draws_are_reproducible() -> None:
    a = draw_teacher_forcing(0.5, 1000, make_generator(5, epoch=2, rank=1))
    b = draw_teacher_forcing(0.5, 1000, make_generator(5, epoch=2, rank=1))
    c = draw_teacher_forcing(0.5, 1000, make_generator(5, epoch=3, rank=1))
    assert a.dtype == torch.bool and a.shape == (1000,)
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert 400 < int(a.sum()) < 600 and bool(a[0])
    assert draw_teacher_forcing(0.0, 5, make_generator(1)).tolist() == [True] + [False] * 4
    assert draw_teacher_forcing(1.0, 5, make_generator(1)).all()


def test_lr_halving_schedule() -> None:
    assert [lr_for_epoch(Spec(lr=1.0), e) for e in (1, 5, 9)] == [1.0, 1.0, 1.0]
    spec = Spec(optimizer="sgd", lr=0.7, lr_halving_start=5)
    assert [lr_for_epoch(spec, e) for e in range(1, 8)] == [0.7] * 4 + [0.35, 0.175, 0.0875]
    opt = make_optimizer(_model(), spec)
    set_lr(opt, 0.1)
    assert all(g["lr"] == 0.1 for g in opt.param_groups)


@pytest.mark.parametrize("name, cls", [("adam", torch.optim.Adam), ("sgd", torch.optim.SGD)])
def test_both_optimisers_step(name: str, cls: type) -> None:
    model = _model()
    opt = make_optimizer(model, Spec(optimizer=name, lr=0.1))
    assert isinstance(opt, cls)
    before = [p.detach().clone() for p in model.parameters()]
    batches = iterate_batches(_corpus(), 10, shuffle=True, seed=0, epoch=0)
    stats = train_epoch(model, opt, batches, teacher_forcing=0.5, clip_norm=1.0,
                        generator=make_generator(0), autocast=False)  # fmt: skip
    assert stats.batches == 2 and stats.tokens == sum(b.num_target_tokens for b in batches)
    assert math.isclose(stats.ppl, math.exp(stats.loss)) and stats.tokens_per_s > 0
    assert any(not torch.equal(a, p) for a, p in zip(before, model.parameters(), strict=True))
    with pytest.raises(ValueError, match="optimizer"):
        make_optimizer(model, Spec(optimizer="rmsprop"))


def test_gradient_norm_is_clipped() -> None:
    model = _model()
    opt = make_optimizer(model, Spec(optimizer="sgd", lr=1.0))
    before = torch.nn.utils.parameters_to_vector(model.parameters()).detach().clone()
    batches = list(iterate_batches(_corpus(), 20, shuffle=False, seed=0, epoch=0))
    train_epoch(model, opt, batches, teacher_forcing=1.0, clip_norm=1e-3,
                generator=make_generator(0), autocast=False)  # fmt: skip
    step = torch.nn.utils.parameters_to_vector(model.parameters()).detach() - before
    assert 0 < step.norm() <= 1e-3 * 1.0001  # one SGD step of lr 1 moves at most clip_norm


def test_tiny_model_overfits_twenty_pairs() -> None:
    corpus = _corpus(20)
    model = _model(seed=1)
    opt = make_optimizer(model, Spec(lr=2e-2))
    gen = make_generator(0)
    for epoch in range(60):
        batches = iterate_batches(corpus, 20, shuffle=True, seed=0, epoch=epoch)
        stats = train_epoch(model, opt, batches, teacher_forcing=0.5, clip_norm=1.0,
                            generator=gen, autocast=False)  # fmt: skip
    val = evaluate_loss(model, iterate_batches(corpus, 7, shuffle=False, seed=0, epoch=0),
                        autocast=False)  # fmt: skip
    assert stats.loss < 0.05 and val.loss < 0.02
    assert val.tokens == sum(int(n) for n in corpus.tgt_lens) + 20
    assert model.training  # evaluate_loss restores the mode


def test_evaluate_loss_is_deterministic_with_dropout_off_in_eval() -> None:
    model = _model(dropout=0.5)
    batches = list(iterate_batches(_corpus(), 8, shuffle=False, seed=0, epoch=0))
    a = evaluate_loss(model, batches, autocast=False)
    b = evaluate_loss(model, batches, autocast=False)
    assert a == b and a.ppl == pytest.approx(math.exp(a.loss))


BF16_PROBLEM = bf16_problem("cpu")
needs_bf16 = pytest.mark.skipif(
    BF16_PROBLEM is not None, reason=f"no bf16 LSTM kernels on this CPU: {BF16_PROBLEM}"
)


@needs_bf16
def test_bf16_training_step_runs_and_reports_fp32_loss() -> None:
    model = _model()
    opt = make_optimizer(model, Spec())
    batches = iterate_batches(_corpus(), 10, shuffle=True, seed=0, epoch=0)
    stats = train_epoch(model, opt, batches, teacher_forcing=0.5, clip_norm=1.0,
                        generator=make_generator(0), autocast=True)  # fmt: skip
    assert math.isfinite(stats.loss) and 2.0 < stats.loss < 4.0  # ~ln(30) untrained
    assert all(p.dtype == torch.float32 for p in model.parameters())


def test_seed_epoch_is_a_function_of_seed_rank_and_epoch() -> None:
    g1 = seed_epoch(1234, epoch=3, rank=0)
    a = (torch.rand(4), torch.rand(4, generator=g1))
    g2 = seed_epoch(1234, epoch=3, rank=0)
    b = (torch.rand(4), torch.rand(4, generator=g2))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(torch.rand(4, generator=seed_epoch(1234, 3, rank=1)), a[1])
    assert not torch.equal(torch.rand(4, generator=seed_epoch(1234, 4, rank=0)), a[1])


@dataclass
class FitSpecT(Spec):
    epochs: int = 3
    batch_size: int = 10
    bucket_pool: int = 2
    clip_norm: float = 1.0
    teacher_forcing: float = 0.7
    label_smoothing: float = 0.0
    seed: int = 5


def _fit(spec: FitSpecT, start: int = 1, state=None, **kw):
    torch.manual_seed(0)
    model = Seq2Seq(30, 30, emb_dim=8, hidden_dim=16, num_layers=2, dropout=0.2)
    opt = make_optimizer(model, spec)
    if state is not None:
        model.load_state_dict(state[0])
        opt.load_state_dict(state[1])
    reports = fit(model, opt, _corpus(), _corpus(), spec, start_epoch=start, **kw)
    return model, opt, reports


def test_fit_trains_validates_and_reports_every_epoch() -> None:
    seen: list[int] = []
    starts: list[int] = []
    _, _, reports = _fit(FitSpecT(), on_epoch=lambda r: seen.append(r.epoch),
                         before_epoch=starts.append)  # fmt: skip
    assert seen == starts == [1, 2, 3] and [r.epoch for r in reports] == [1, 2, 3]
    assert all(r.valid is not None and r.seconds >= r.train.seconds for r in reports)
    assert reports[-1].valid.loss < reports[0].valid.loss  # it learns
    assert reports[-1].train.loss < reports[0].train.loss


def test_fit_resumed_from_an_epoch_equals_an_uninterrupted_run() -> None:
    """The seeding rule: restart at epoch 3 with epoch 2's weights and optimizer = no restart."""
    whole, _, full = _fit(FitSpecT())
    first, opt, _ = _fit(FitSpecT(epochs=2))
    state = (copy.deepcopy(first.state_dict()), copy.deepcopy(opt.state_dict()))
    torch.manual_seed(999)  # whatever happened in between
    resumed, _, rest = _fit(FitSpecT(), start=3, state=state)
    assert [r.epoch for r in rest] == [3]
    assert rest[0].train.loss == full[2].train.loss
    for (name, a), (_, b) in zip(whole.state_dict().items(), resumed.state_dict().items(),
                                 strict=True):  # fmt: skip
        assert torch.equal(a, b), name


def test_fit_without_valid_and_sharded_by_rank() -> None:
    torch.manual_seed(0)
    model = Seq2Seq(30, 30, emb_dim=8, hidden_dim=16, num_layers=1, dropout=0.0)
    spec = FitSpecT(epochs=1)
    reports = fit(model, make_optimizer(model, spec), _corpus(), None, spec, rank=1, world_size=2)
    alone = fit(model, make_optimizer(model, spec), _corpus(), None, spec)
    assert reports[0].valid is None
    assert reports[0].train.tokens < alone[0].train.tokens  # half of each global batch


def test_label_smoothing_trains_on_the_smoothed_loss_and_validates_plain_nll() -> None:
    plain_model, _, plain = _fit(FitSpecT(epochs=1))
    model, _, smooth = _fit(FitSpecT(epochs=1, label_smoothing=0.2))
    assert abs(smooth[0].train.loss - plain[0].train.loss) > 1e-6  # the objective changed
    assert not torch.equal(model.out.weight, plain_model.out.weight)  # and so did the updates
    batches = iterate_batches(_corpus(), 256, shuffle=False, seed=0, epoch=0)
    again = evaluate_loss(model, batches, autocast=False)
    assert smooth[0].valid is not None
    assert smooth[0].valid.loss == pytest.approx(again.loss, rel=1e-9)  # plain NLL, unsmoothed


def test_adam_is_fused_where_torch_has_the_kernel_and_plain_elsewhere() -> None:
    from seq2seq.training import adam

    real = nn.Parameter(torch.ones(3))
    optimizer = adam([real], 0.1)
    assert optimizer.param_groups[0]["fused"] is True
    real.grad = torch.ones(3)
    optimizer.step()
    torch.testing.assert_close(real.detach(), torch.full((3,), 0.9))  # Adam's first step: lr
    complex_param = nn.Parameter(torch.ones(3, dtype=torch.complex64))  # no fused kernel
    optimizer = adam([complex_param], 0.1)
    assert not optimizer.param_groups[0]["fused"]
    complex_param.grad = torch.ones(3, dtype=torch.complex64)
    optimizer.step()  # the default implementation trains it
    assert not torch.equal(complex_param.detach(), torch.ones(3, dtype=torch.complex64))
