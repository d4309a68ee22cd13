"""Seq2Seq: the fast training forward equals a plain step-by-step loop; padding invariance."""

from __future__ import annotations

import contextlib

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from seq2seq.batching import ParallelCorpus
from seq2seq.model import FastDropout, Seq2Seq, _PackedPlan, _StepPlan
from seq2seq.precision import bf16_problem
from seq2seq.vocab import PAD

pytestmark = pytest.mark.usefixtures("one_torch_thread")


V_SRC, V_TGT = 23, 19


def _model(dropout: float = 0.0, seed: int = 0) -> Seq2Seq:
    torch.manual_seed(seed)
    return Seq2Seq(V_SRC, V_TGT, emb_dim=8, hidden_dim=12, num_layers=2, dropout=dropout).double()


def _batch(seed: int = 0, n: int = 5):
    g = torch.Generator().manual_seed(seed)
    src = [torch.randint(4, V_SRC, (int(k),), generator=g).tolist() for k in range(1, n + 1)]
    tgt_lens = torch.randint(0, 7, (n,), generator=g)
    tgt = [torch.randint(4, V_TGT, (int(k),), generator=g).tolist() for k in tgt_lens]
    return ParallelCorpus.from_lists(src, tgt).collate(torch.arange(n).numpy())


def reference_loss(model: Seq2Seq, b, tf_mask: torch.Tensor) -> torch.Tensor:
    """The plain recipe: one decode_step per t, full logits every step, argmax fed back."""
    state = model.encode(b.src, b.src_lens)
    y, total = b.tgt[:, 0], 0.0
    for t in range(b.tgt.shape[1] - 1):
        if t > 0:
            y = b.tgt[:, t] if tf_mask[t] else logits.argmax(-1)  # noqa: F821 (set last step)
        logits, state = model.decode_step(y, state)
        total = total + F.cross_entropy(logits, b.tgt[:, t + 1], ignore_index=PAD, reduction="sum")
    return total


def _grads(model: Seq2Seq) -> list[torch.Tensor]:
    return [p.grad.clone() for p in model.parameters()]


def _assert_fast_equals_step_by_step(model: Seq2Seq, b, mask: torch.Tensor) -> int:
    """The fast forward's loss and gradients equal reference_loss's; returns its token count."""
    model.zero_grad()
    ref = reference_loss(model, b, mask)
    ref.backward()
    ref_grads = _grads(model)
    model.zero_grad()
    loss, n = model(b.src, b.src_lens, b.tgt, b.tgt_lens, mask)
    loss.backward()
    torch.testing.assert_close(loss, ref, rtol=1e-10, atol=1e-10)
    for got, want in zip(_grads(model), ref_grads, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-8, atol=1e-10)
    return n


MASKS = ["all_true", "all_false", "random1", "random2", "random3"]


@pytest.mark.parametrize("kind", MASKS)
def test_fast_forward_equals_step_by_step_loss_and_gradients(kind: str) -> None:
    b = _batch(seed=3, n=6)
    steps = b.tgt.shape[1] - 1
    if kind == "all_true":
        mask = torch.ones(steps, dtype=torch.bool)
    elif kind == "all_false":
        mask = torch.zeros(steps, dtype=torch.bool)
    else:
        mask = torch.rand(steps, generator=torch.Generator().manual_seed(MASKS.index(kind))) < 0.5
    n = _assert_fast_equals_step_by_step(_model(seed=1), b, mask)
    assert n == int((b.tgt != PAD).sum()) - len(b)  # predicted tokens incl. <eos>


def _mixed_lengths_batch(g: torch.Generator, n: int = 24):
    src = [torch.randint(4, V_SRC, (int(k),), generator=g).tolist() for k in range(1, n + 1)]
    tgt = [
        torch.randint(4, V_TGT, (int(k),), generator=g).tolist() for k in (torch.arange(n) * 7) % 19
    ]
    return ParallelCorpus.from_lists(src, tgt).collate(torch.arange(n).numpy())


@pytest.mark.parametrize("packed", [True, False])
@pytest.mark.parametrize("ratio", [1.0, 0.7, 0.0])
def test_fast_forward_equals_step_by_step_on_mixed_lengths(
    monkeypatch, ratio: float, packed: bool
) -> None:
    """Unsorted rows of very different lengths: the forward reorders them and runs only live
    rows, on packed rows (the CPU's training path) or in padded segments cut where rows finish
    (elsewhere); none of that may change loss or gradients."""
    import seq2seq.model as model_module

    monkeypatch.setattr(model_module, "PACKED_DECODER", packed)
    ran = []  # which decoder path the model's forward took
    for name in ("_packed_decode_loss", "_decode_segments"):
        method = getattr(Seq2Seq, name)
        spy = lambda *a, _m=method, _n=name, **k: ran.append(_n) or _m(*a, **k)  # noqa: E731
        monkeypatch.setattr(Seq2Seq, name, spy)
    g = torch.Generator().manual_seed(11)
    n = 24
    b = _mixed_lengths_batch(g, n)
    steps = b.tgt.shape[1] - 1
    mask = torch.rand(steps, generator=g) < ratio
    mask[0] = True
    lens, tf = b.tgt_lens.numpy(), mask.tolist()
    if packed:  # finished rows leave the steps that follow, without cutting the segment
        segments = _PackedPlan(tf, lens, steps, b.tgt.device).segments
        assert min(int(seg.sizes[-1]) for seg in segments) < n
        if ratio == 1.0:
            assert len(segments) == 1
    else:
        plan = _StepPlan(tf, lens, steps, b.tgt.device)
        assert plan.order is not None and min(plan.live) < n  # the shortcuts are really taken
        if ratio == 1.0:
            assert len(plan.segments) > 1 and not any(plan.free)  # cuts only
    _assert_fast_equals_step_by_step(_model(seed=6), b, mask)
    assert set(ran) == {"_packed_decode_loss" if packed else "_decode_segments"}


def test_packed_plan_runs_each_live_step_once_and_segments_only_at_free_steps() -> None:
    g = torch.Generator().manual_seed(12)
    b = _mixed_lengths_batch(g)
    steps = b.tgt.shape[1] - 1
    mask = torch.rand(steps, generator=g) < 0.6
    plan = _PackedPlan(mask.tolist(), b.tgt_lens.numpy(), steps, b.tgt.device)
    lens = np.sort(b.tgt_lens.numpy() - 1)[::-1]  # decoder steps per row, longest first
    tgt = b.tgt.index_select(0, plan.order).reshape(-1)
    starts = [seg.stop - len(seg.sizes) for seg in plan.segments]
    assert starts == [0, *(t for t in range(1, int(lens[0])) if not mask[t])]
    assert all(seg.free == (seg.stop - len(seg.sizes) > 0) for seg in plan.segments)
    sizes = torch.cat([seg.sizes for seg in plan.segments]).numpy()
    assert sizes.tolist() == [int((lens > t).sum()) for t in range(int(lens[0]))]  # live rows
    assert plan.segments[-1].hi == plan.n_tokens == int(lens.sum()) == len(plan.in_idx)
    assert (tgt[plan.in_idx] != PAD).all()  # no step of a finished row is run
    ends = sum(seg.end_rows for seg in plan.segments)
    assert ends > 0 and len(plan.gold_idx) + ends == plan.n_tokens
    assert (tgt[plan.gold_idx] != PAD).all()
    assert len(set(plan.gold_idx.tolist())) == len(plan.gold_idx)


@pytest.mark.parametrize("ratio", [1.0, 0.5])
def test_label_smoothing_equals_the_step_by_step_smoothed_loss(ratio: float) -> None:
    """With label smoothing the fast forward still equals the plain loop's smoothed loss (pad
    targets excluded), and it differs from the unsmoothed loss."""
    b = _batch(seed=7, n=6)
    model = _model(seed=3)
    model.reset_parameters(bound=1.0)  # peaked predictions: smoothing visibly matters
    steps = b.tgt.shape[1] - 1
    mask = torch.rand(steps, generator=torch.Generator().manual_seed(int(ratio * 10))) < ratio
    mask[0] = True
    state = model.encode(b.src, b.src_lens)
    y, ref = b.tgt[:, 0], torch.zeros((), dtype=torch.float64)
    for t in range(steps):
        if t > 0:
            y = b.tgt[:, t] if mask[t] else logits.argmax(-1)  # noqa: F821 (set last step)
        logits, state = model.decode_step(y, state)
        ce = F.cross_entropy(logits, b.tgt[:, t + 1], ignore_index=PAD, reduction="sum",
                             label_smoothing=0.1)  # fmt: skip
        ref = ref + ce
    smoothed, _ = model(b.src, b.src_lens, b.tgt, b.tgt_lens, mask, 0.1)
    plain, _ = model(b.src, b.src_lens, b.tgt, b.tgt_lens, mask)
    torch.testing.assert_close(smoothed, ref, rtol=1e-10, atol=1e-10)
    assert abs(smoothed.item() - plain.item()) > 1e-6  # smoothing really changes the loss


def test_free_running_really_feeds_predictions_back() -> None:
    b = _batch(seed=4)
    model = _model(seed=2)
    model.reset_parameters(bound=1.0)  # large weights: the inputs visibly matter
    steps = b.tgt.shape[1] - 1
    forced, _ = model(b.src, b.src_lens, b.tgt, b.tgt_lens, torch.ones(steps, dtype=torch.bool))
    free, _ = model(b.src, b.src_lens, b.tgt, b.tgt_lens, torch.zeros(steps, dtype=torch.bool))
    assert abs((forced - free).item()) > 1e-3


def test_sentence_loss_does_not_depend_on_batch_mates_padding() -> None:
    b = _batch(seed=5, n=6)
    model = _model(dropout=0.3, seed=3).float().eval()  # fp32, eval: dropout off
    steps = b.tgt.shape[1] - 1
    mask = torch.rand(steps, generator=torch.Generator().manual_seed(0)) < 0.5
    with torch.no_grad():
        for i in range(len(b)):
            s_len, t_len = int(b.src_lens[i]), int(b.tgt_lens[i])
            alone, n_alone = model(
                b.src[i : i + 1, :s_len], b.src_lens[i : i + 1],
                b.tgt[i : i + 1, :t_len], b.tgt_lens[i : i + 1], mask[: t_len - 1],
            )  # fmt: skip
            keep = [j for j in range(len(b)) if j != i]
            mates, _ = model(b.src[keep], b.src_lens[keep], b.tgt[keep], b.tgt_lens[keep], mask)
            whole, n_whole = model(b.src, b.src_lens, b.tgt, b.tgt_lens, mask)
            assert n_alone == t_len - 1
            torch.testing.assert_close(whole - mates, alone, atol=1e-5, rtol=1e-5)


def test_pad_positions_get_no_embedding_gradient_and_shapes() -> None:
    b = _batch(seed=6)
    model = _model(seed=4)
    loss, n = model(b.src, b.src_lens, b.tgt, b.tgt_lens, [True] * (b.tgt.shape[1] - 1))
    assert loss.shape == () and loss.dtype == torch.float64 and n > 0
    loss.backward()
    assert model.tgt_emb.weight.grad[PAD].abs().sum() == 0
    assert model.src_emb.weight.grad[PAD].abs().sum() == 0
    state = model.encode(b.src, b.src_lens)
    assert state[0].shape == (2, len(b), 12) and state[1].shape == (2, len(b), 12)
    logits, _ = model.decode_step(b.tgt[:, 0], state)
    assert logits.shape == (len(b), V_TGT)


def test_wrong_mask_length_is_rejected() -> None:
    b = _batch()
    with pytest.raises(ValueError, match="tf_mask"):
        _model()(b.src, b.src_lens, b.tgt, b.tgt_lens, [True])


@pytest.mark.skipif(bf16_problem("cpu") is not None, reason="no bf16 LSTM kernels on this CPU")
def test_bf16_autocast_keeps_the_loss_in_fp32_and_close() -> None:
    b = _batch(seed=7)
    model = _model(seed=5).float().eval()
    mask = [True] * (b.tgt.shape[1] - 1)
    with torch.no_grad():
        ref, _ = model(b.src, b.src_lens, b.tgt, b.tgt_lens, mask)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low, _ = model(b.src, b.src_lens, b.tgt, b.tgt_lens, mask)
    assert low.dtype == torch.float32
    torch.testing.assert_close(low, ref, rtol=2e-2, atol=0.0)


def test_init_is_uniform_and_from_config() -> None:
    class Spec:
        emb_dim, hidden_dim, num_layers, dropout = 6, 10, 3, 0.1

    model = Seq2Seq.from_config(Spec(), 30, 40)
    assert model.decoder.num_layers == 3 and model.out.out_features == 40
    assert all(p.abs().max() <= 0.08 for p in model.parameters())
    assert model.tgt_emb.weight[PAD].abs().sum() == 0


@pytest.mark.parametrize("p", [0.2, 0.5])
def test_fast_dropout_is_unbiased_seeded_and_masks_the_gradient(p: float) -> None:
    drop = FastDropout(p)
    x = torch.ones(400_000, requires_grad=True)
    torch.manual_seed(0)
    y = drop(x)
    torch.manual_seed(0)
    assert torch.equal(drop(x), y)  # the default generator drives it
    kept = y != 0
    assert abs(kept.float().mean().item() - (1 - p)) < 0.005
    assert abs(y.mean().item() - 1.0) < 0.01  # E[y] = x
    y.sum().backward()
    torch.testing.assert_close(x.grad, y.detach())  # gradient = mask * scale
    drop.eval()
    assert drop(x) is x


@pytest.mark.parametrize(("ratio", "ls"), [(1.0, 0.0), (0.5, 0.0), (0.5, 0.1)])
def test_own_lstm_backward_equals_nn_lstm_in_the_model(
    monkeypatch, ratio: float, ls: float
) -> None:
    """The CPU training step's LSTM layers (seq2seq.lstm) and output layer with its loss
    (seq2seq.loss; both model.OWN_BACKWARD) give nn.LSTM's and F.cross_entropy's loss and
    gradients, through the packed encoder, the decoder's segments and their ends alike."""
    import seq2seq.model as model_module

    g = torch.Generator().manual_seed(5)
    n = 16
    src = [torch.randint(4, V_SRC, (1 + k % 7,), generator=g).tolist() for k in range(n)]
    tgt = [torch.randint(4, V_TGT, ((k * 5) % 9,), generator=g).tolist() for k in range(n)]
    b = ParallelCorpus.from_lists(src, tgt).collate(torch.arange(n).numpy())
    mask = torch.rand(b.tgt.shape[1] - 1, generator=g) < ratio
    mask[0] = True
    model = _model(seed=4)
    results = []
    for own in (True, False):
        monkeypatch.setattr(model_module, "OWN_BACKWARD", own)
        assert model_module._own_backward(b.src.double()) is own
        model.zero_grad()
        loss, _ = model(b.src, b.src_lens, b.tgt, b.tgt_lens, mask, label_smoothing=ls)
        loss.backward()
        results.append((loss.detach(), _grads(model)))
    (loss_own, grads_own), (loss_nn, grads_nn) = results
    torch.testing.assert_close(loss_own, loss_nn, rtol=1e-12, atol=1e-12)
    for got, want in zip(grads_own, grads_nn, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-12)


@pytest.mark.skipif(bf16_problem("cpu") is not None, reason="no bf16 LSTM kernels on this CPU")
@pytest.mark.parametrize("ratio", [1.0, 0.5])
def test_bf16_training_step_runs_the_own_layer_close_to_onednn_and_fp32(
    monkeypatch, ratio: float
) -> None:
    """Under CPU bf16 autocast with gradients the LSTMs run seq2seq.lstm's layer with bf16
    products (model.OWN_BF16): loss and gradients within bf16's rounding of fp32's and of
    nn.LSTM's oneDNN bf16 kernels (OWN_BF16 = False)."""
    import seq2seq.model as model_module

    g = torch.Generator().manual_seed(6)
    n = 24
    src = [torch.randint(4, V_SRC, (2 + k % 9,), generator=g).tolist() for k in range(n)]
    tgt = [torch.randint(4, V_TGT, (1 + (k * 5) % 11,), generator=g).tolist() for k in range(n)]
    b = ParallelCorpus.from_lists(src, tgt).collate(torch.arange(n).numpy())
    mask = torch.rand(b.tgt.shape[1] - 1, generator=g) < ratio
    mask[0] = True
    model = _model(seed=8, dropout=0.0).float()
    seen: list[object] = []
    casts: set[int] = set()
    layer = model_module.packed_lstm_layer

    def spy(*args):
        seen.append(args[8])  # gemm_dtype
        if args[8] is not None:  # the weights come cast, once per forward
            assert args[9] is not None and args[9][1].dtype == args[8]
            casts.add(id(args[9][1]))
        return layer(*args)

    monkeypatch.setattr(model_module, "packed_lstm_layer", spy)
    results = {}
    for name, own, bf16 in (("fp32", True, False), ("own", True, True), ("onednn", False, True)):
        monkeypatch.setattr(model_module, "OWN_BF16", own)
        seen.clear()
        model.zero_grad()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss, _ = model(b.src, b.src_lens, b.tgt, b.tgt_lens, mask)
        loss.backward()
        results[name] = (loss.detach(), _grads(model))
        want_seen = {"fp32": {None}, "own": {torch.bfloat16}, "onednn": set()}[name]
        assert set(seen) == want_seen and (not want_seen or len(seen) >= 4)
    assert len(casts) == 4  # 2 + 2 layers, however many segments the decoder ran
    loss32, grads32 = results["fp32"]
    for name in ("own", "onednn"):
        loss, grads = results[name]
        assert loss.dtype == torch.float32
        torch.testing.assert_close(loss, loss32, rtol=1e-2, atol=0.0)
        for got, want in zip(grads, grads32, strict=True):
            assert ((got - want).norm() / want.norm()).item() < 5e-2, name


def test_dropout_between_lstm_layers_is_drawn_by_fast_dropout(monkeypatch) -> None:
    """In training on the CPU the stacked LSTMs run layer by layer and the model's FastDropout
    draws the dropout between their layers (nn.LSTM's own inter-layer dropout never runs)."""
    model = _model(dropout=0.5, seed=2).float()
    calls: list[tuple[int, ...]] = []
    original = FastDropout.forward

    def spy(self, x):
        calls.append(tuple(x.shape))
        return original(self, x)

    monkeypatch.setattr(FastDropout, "forward", spy)
    b = _batch(seed=1, n=4)
    mask = torch.ones(b.tgt.shape[1] - 1, dtype=torch.bool)
    hidden = model.args["hidden_dim"]

    def hidden_sized_calls() -> list[tuple[int, ...]]:  # incl. the output layer's dropout
        calls.clear()
        model(b.src, b.src_lens, b.tgt, b.tgt_lens, mask)[0].backward()
        return [s for s in calls if s[-1] == hidden]

    with_between = hidden_sized_calls()
    model.encoder.dropout = model.decoder.dropout = 0.0  # no dropout between layers
    without = hidden_sized_calls()
    added = list(with_between)
    for shape in without:
        added.remove(shape)
    src_tokens = int(b.src_lens.sum())
    assert (src_tokens, hidden) in added  # the packed encoder's first layer's output
    assert len(added) >= 2  # and the decoder's (one per segment)


def _steps(model: Seq2Seq, b, ys: torch.Tensor) -> list[torch.Tensor]:
    """Logits and states of decode_step fed ys (T, B) in turn, eval mode, no gradients."""
    model.eval()
    out = []
    with torch.no_grad():
        state = model.encode(b.src, b.src_lens)
        for y in ys:
            logits, state = model.decode_step(y, state)
            out += [logits, *state]
    return out


@pytest.mark.parametrize("layers", [1, 3])
@pytest.mark.parametrize("table", [True, False])
def test_inference_step_equals_nn_lstms_step(monkeypatch, layers: int, table: bool) -> None:
    """decode_step's inference step (eval, no grad, CPU: two products per layer on the weights
    as they are; the first layer's input term from inference_table's table or not) gives
    nn.LSTM's logits and states."""
    import seq2seq.model as model_module

    b = _batch(seed=8, n=6)
    torch.manual_seed(5)
    model = Seq2Seq(V_SRC, V_TGT, emb_dim=8, hidden_dim=12, num_layers=layers, dropout=0.3)
    model = model.double()
    model.reset_parameters(bound=0.5)
    ys = torch.randint(3, V_TGT, (7, len(b)), generator=torch.Generator().manual_seed(1))
    calls = []
    own = model_module.Seq2Seq._inference_step
    monkeypatch.setattr(
        model_module.Seq2Seq, "_inference_step", lambda *a: calls.append(1) or own(*a)
    )
    monkeypatch.setattr(model_module, "INFERENCE_STEP", False)
    want = _steps(model, b, ys)
    assert not calls  # nn.LSTM ran
    monkeypatch.setattr(model_module, "INFERENCE_STEP", True)
    with model.inference_table(rows=10**6) if table else contextlib.nullcontext():
        assert (model._step_table is not None) == table
        got = _steps(model, b, ys)
    assert len(calls) == len(ys) and model._step_table is None
    for g, w in zip(got, want, strict=True):
        torch.testing.assert_close(g, w, rtol=1e-12, atol=1e-12)


def test_inference_table_only_where_it_pays_and_fits(monkeypatch) -> None:
    """The table is built for at least V row-steps to come, within STEP_TABLE_MAX, and a
    nested call keeps the outer one."""
    import seq2seq.model as model_module

    model = _model(seed=1).eval()
    with model.inference_table(rows=V_TGT - 1):
        assert model._step_table is None
    with model.inference_table(rows=V_TGT):
        outer = model._step_table
        assert outer is not None and outer.shape == (V_TGT, 4 * 12)
        with model.inference_table(rows=10**6):
            assert model._step_table is outer
        assert model._step_table is outer
    monkeypatch.setattr(model_module, "STEP_TABLE_MAX", V_TGT * 4 * 12 - 1)
    with model.inference_table(rows=10**6):
        assert model._step_table is None


def test_decoding_after_fused_adam_steps_uses_the_new_weights(monkeypatch) -> None:
    """translate_ids after the library's optimizer (fused Adam, whose steps leave the weights'
    version counters as they were) decodes with the updated weights: its outputs equal
    nn.LSTM's step's, before and after training."""
    import seq2seq.model as model_module
    from seq2seq.search import translate_ids
    from seq2seq.training import adam

    b = _batch(seed=11, n=6)
    model = _model(seed=6).float()
    model.reset_parameters(bound=0.5)
    optimizer = adam(model.parameters(), lr=0.05)
    src = [row[:n] for row, n in zip(b.src.tolist(), b.src_lens.tolist(), strict=True)]

    def both() -> tuple[list, list]:
        monkeypatch.setattr(model_module, "INFERENCE_STEP", True)
        own = translate_ids(model, src, beam_size=2, max_len_ratio=3.0)
        monkeypatch.setattr(model_module, "INFERENCE_STEP", False)
        return own, translate_ids(model, src, beam_size=2, max_len_ratio=3.0)

    first = both()
    assert first[0] == first[1]
    for _ in range(5):
        model.train()
        optimizer.zero_grad()
        loss, _ = model(b.src, b.src_lens, b.tgt, b.tgt_lens, [True] * (b.tgt.shape[1] - 1))
        loss.backward()
        optimizer.step()
    second = both()
    assert second[0] == second[1]
    assert second[0] != first[0]  # the training changed the translations


def test_inference_step_is_not_taken_in_training_or_with_gradients(monkeypatch) -> None:
    """With gradients or in train mode decode_step stays nn.LSTM's (autograd, dropout)."""
    import seq2seq.model as model_module

    def refuse(*args):
        raise AssertionError("the inference step ran")

    monkeypatch.setattr(model_module.Seq2Seq, "_inference_step", refuse)
    b = _batch(seed=10)
    model = _model(dropout=0.3, seed=1)
    logits, _ = model.decode_step(b.tgt[:, 0], model.encode(b.src, b.src_lens))
    assert logits.requires_grad
    with torch.no_grad():
        model.decode_step(b.tgt[:, 0], model.encode(b.src, b.src_lens))  # train mode
