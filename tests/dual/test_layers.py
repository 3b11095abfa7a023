"""Layer types beyond nn.Linear: convolutions, embeddings and LSTMs recorded exactly; the rest refused by name."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from qimia.dual.errors import DualFormError, UnrecordedLayerWarning
from qimia.dual.explain import DualExplainer, layer_inputs
from qimia.dual.reconstruct import dual_forward, reconstruct_layer, reconstruct_model
from qimia.dual.recorder import DualRecorder
from qimia.dual.recurrent import unrolled_lstm
from qimia.dual.verify import verify_store


def _train(model, path, x, y, steps=12, batch=8, layers=None, **kw):
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1, momentum=0.9,
                          weight_decay=1e-3)
    rec = DualRecorder(model, opt, str(path), layers=layers, **kw)
    g = torch.Generator().manual_seed(0)
    for _ in range(steps):
        idx = torch.randint(0, len(x), (batch,), generator=g)
        rec.set_batch(idx, labels=y[idx])
        opt.zero_grad()
        F.cross_entropy(model(x[idx]), y[idx]).backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 0.5)
        opt.step()
    return rec.close()


def _assert_exact(store, model, helpers, tol=1e-5):
    params = dict(model.named_parameters())
    for name in store.layer_names:
        spec = store.layer(name)
        W, b = reconstruct_layer(store, name)
        weight = params[spec.weight]
        assert W.shape == weight.shape and helpers.rel_err(W, weight) <= tol, name
        if spec.bias is not None:
            assert helpers.rel_err(b, params[spec.bias]) <= tol, name


class ConvNet(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        conv = {1: nn.Conv1d, 2: nn.Conv2d, 3: nn.Conv3d}[dim]
        self.c1 = conv(2, 4, 3, stride=2, padding=1)
        self.c2 = conv(4, 5, 3, padding="same", dilation=2, padding_mode="circular")
        self.head = nn.Linear(5, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.c2(torch.relu(self.c1(x))))
        return self.head(h.flatten(2).mean(-1))


@pytest.mark.parametrize("dim", [1, 2, 3])
def test_convolutions_are_recorded_exactly(tmp_path, helpers, dim):
    torch.manual_seed(0)
    shape = {1: (40, 2, 9), 2: (40, 2, 7, 6), 3: (40, 2, 5, 4, 5)}[dim]
    x, y = torch.randn(*shape), torch.randint(0, 3, (40,))
    model = ConvNet(dim)
    store = _train(model, tmp_path / "s", x, y)
    assert store.layer_names == ["c1", "c2", "head"]
    assert store.layer("c1").d_key == 2 * 3 ** dim and store.layer("c1").d_value == 4
    _assert_exact(store, model, helpers)
    queries, _ = layer_inputs(model, x[:3], ["c1"])                          # (3 * L, C * k^dim) patches
    out = model.c1(x[:3])                                                    # (3, 4, *L)
    primal = out.flatten(2).transpose(1, 2).reshape(-1, 4)
    assert helpers.rel_err(dual_forward(store, "c1", queries["c1"]).detach(), primal.detach()) <= 1e-5
    assert verify_store(store.root).ok


class EmbedNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(13, 6, padding_idx=0)
        self.head = nn.Linear(6, 3)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.head(self.embed(ids).mean(1))


def test_embedding_is_recorded_exactly_with_token_id_keys(tmp_path, helpers):
    torch.manual_seed(0)
    x, y = torch.randint(0, 13, (40, 5)), torch.randint(0, 3, (40,))
    model = EmbedNet()
    store = _train(model, tmp_path / "s", x, y, layers=["embed", "head"])
    assert store.layer("embed").d_key == 13 and store.layer("embed").d_value == 6
    assert store.shards("embed")[0].keys.shape[1] == 1                      # stored as token ids
    _assert_exact(store, model, helpers)
    assert torch.equal(reconstruct_layer(store, "embed")[0][0], torch.zeros(6, dtype=torch.float64))  # padding
    queries, _ = layer_inputs(model, x[:2], ["embed"])                        # one-hot rows (2 * 5, 13)
    assert queries["embed"].shape == (10, 13)
    dual = dual_forward(store, "embed", queries["embed"])
    assert helpers.rel_err(dual.detach(), model.embed(x[:2]).reshape(10, 6).detach()) <= 1e-5
    top = DualExplainer(store, "embed", score="key").explain(queries["embed"][:1], k=3)
    tokens = store.shards("embed")[0].keys[:, 0]
    assert (tokens[top.topk_slots[0].numpy()] == int(x[0, 0])).all()       # a token attends to its own slots
    assert verify_store(store.root).ok


def test_embedding_is_not_recorded_by_default_but_named(tmp_path, helpers):
    torch.manual_seed(0)
    x, y = torch.randint(0, 13, (40, 5)), torch.randint(0, 3, (40,))
    model = EmbedNet()
    with pytest.warns(UnrecordedLayerWarning, match=r"embed \(Embedding\).*layers="):
        store = _train(model, tmp_path / "s", x, y, steps=2)
    assert store.layer_names == ["head"]


class Recurrent(nn.Module):
    def __init__(self, kind: type[nn.Module], **kw) -> None:
        super().__init__()
        self.rnn = kind(4, 6, **{"batch_first": True, **kw})
        self.head = nn.Linear(6 * (1 + bool(kw.get("bidirectional"))), 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (B, T, 4)
        if self.rnn.batch_first:
            return self.head(self.rnn(x)[0][:, -1])
        return self.head(self.rnn(x.transpose(0, 1))[0][-1])                   # (T, B, 4) -> (T, B, 6)


@pytest.mark.parametrize("kind", [nn.GRU, nn.RNN])
def test_fused_recurrent_layers_are_refused_by_name_and_warned(tmp_path, helpers, kind):
    torch.manual_seed(0)
    model = Recurrent(kind)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(DualFormError, match=rf"rnn \({kind.__name__}\).*fused.*nn.LSTM"):
        DualRecorder(model, opt, str(tmp_path / "a"), layers=["rnn", "head"])
    x, y = torch.randn(30, 5, 4), torch.randint(0, 3, (30,))
    with pytest.warns(UnrecordedLayerWarning, match=rf"rnn \({kind.__name__}\)"):
        store = _train(model, tmp_path / "b", x, y, steps=4)
    _assert_exact(store, model, helpers)


@pytest.mark.parametrize("layers, batch_first, bias", [(1, True, True), (2, False, True), (2, True, False)])
def test_lstm_is_recorded_exactly_as_two_views_per_layer(tmp_path, helpers, layers, batch_first, bias):
    torch.manual_seed(0)
    model = Recurrent(nn.LSTM, num_layers=layers, batch_first=batch_first, bias=bias, dropout=0.3 * (layers > 1))
    x, y = torch.randn(30, 5, 4), torch.randint(0, 3, (30,))
    store = _train(model, tmp_path / "s", x, y)
    views = [f"rnn.{part}_l{k}" for k in range(layers) for part in ("ih", "hh")]
    assert store.layer_names == [*views, "head"]
    assert (store.layer("rnn.ih_l0").d_key, store.layer("rnn.hh_l0").d_key, store.layer("rnn.hh_l0").d_value) == (4, 6, 24)
    assert store.num_slots("rnn.ih_l0") == 12 * 8 * 5                   # one slot per example and time step
    _assert_exact(store, model, helpers)
    assert "forward" not in vars(model.rnn)                             # the fused kernel is back after close()
    assert verify_store(store.root).ok


def test_lstm_views_are_the_products_the_fused_kernel_computes(tmp_path, helpers):
    """The unrolled LSTM equals nn.LSTM (batched or not, with a start state); each view's dual form
    equals its product W x + b at the keys layer_inputs gives."""
    torch.manual_seed(0)
    lstm = nn.LSTM(4, 6, num_layers=2)
    x, hx = torch.randn(5, 3, 4), (torch.randn(2, 3, 6), torch.randn(2, 3, 6))
    for args in ((x,), (x, hx), (x[:, 0], tuple(s[:, 0] for s in hx))):
        out, (h, c) = unrolled_lstm(lstm, *args)
        ref, (h_ref, c_ref) = lstm(*args)
        assert max(helpers.rel_err(a, b) for a, b in ((out, ref), (h, h_ref), (c, c_ref))) <= 1e-6
    model = Recurrent(nn.LSTM)
    xs, y = torch.randn(30, 5, 4), torch.randint(0, 3, (30,))
    store = _train(model, tmp_path / "s", xs, y)
    queries, out = layer_inputs(model, xs[:2], ["rnn.ih_l0", "rnn.hh_l0"])
    assert helpers.rel_err(out, model(xs[:2])) <= 1e-6 and queries["rnn.ih_l0"].shape == (10, 4)
    h_prev = torch.cat([torch.zeros(2, 1, 6), model.rnn(xs[:2])[0][:, :-1]], 1).reshape(10, 6)
    assert helpers.rel_err(queries["rnn.hh_l0"], h_prev) <= 1e-6
    r = model.rnn
    for view, keys, (W, b) in (("rnn.ih_l0", xs[:2].reshape(10, 4), (r.weight_ih_l0, r.bias_ih_l0)),
                               ("rnn.hh_l0", h_prev, (r.weight_hh_l0, r.bias_hh_l0))):
        assert helpers.rel_err(dual_forward(store, view, queries[view]), F.linear(keys, W, b)) <= 1e-5, view
    copy = reconstruct_model(store, model)
    assert helpers.rel_err(copy(xs), model(xs)) <= 1e-5


@pytest.mark.parametrize("kw, reason", [({"bidirectional": True}, "bidirectional=True"),
                                        ({"proj_size": 2}, "proj_size=2")])
def test_lstms_without_a_recorded_form_are_refused_by_name_and_warned(tmp_path, helpers, kw, reason):
    torch.manual_seed(0)
    model = Recurrent(nn.LSTM, **kw)
    if "proj_size" in kw:
        model.head = nn.Linear(2, 3)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(DualFormError, match=rf"rnn \(LSTM\).*{reason}"):
        DualRecorder(model, opt, str(tmp_path / "a"), layers=["rnn", "head"])
    with pytest.warns(UnrecordedLayerWarning, match=rf"rnn \(LSTM\): {reason}"):
        store = _train(model, tmp_path / "b", torch.randn(30, 5, 4), torch.randint(0, 3, (30,)), steps=2)
    assert store.layer_names == ["head"]


class Attention(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.proj = nn.Linear(4, 8)
        self.attn = nn.MultiheadAttention(8, 2, batch_first=True)
        self.head = nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.proj(x)
        return self.head(self.attn(h, h, h, need_weights=False)[0].mean(1))


def test_multihead_attention_is_refused_by_name_and_the_rest_is_exact(tmp_path, helpers):
    torch.manual_seed(0)
    model = Attention()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(DualFormError, match=r"attn.out_proj.*MultiheadAttention.*functional"):
        DualRecorder(model, opt, str(tmp_path / "a"), layers=["attn.out_proj"])
    x, y = torch.randn(30, 5, 4), torch.randint(0, 3, (30,))
    with pytest.warns(UnrecordedLayerWarning, match=r"attn \(MultiheadAttention\)"):
        store = _train(model, tmp_path / "b", x, y, steps=6)
    assert store.layer_names == ["proj", "head"]
    _assert_exact(store, model, helpers)


def test_grouped_convolution_is_refused_by_name(tmp_path):
    model = nn.Sequential(nn.Conv2d(4, 4, 3, groups=2), nn.Flatten(), nn.Linear(4 * 2 * 2, 3))
    with pytest.raises(DualFormError, match=r"0 \(Conv2d\).*groups=2"):
        DualRecorder(model, torch.optim.SGD(model.parameters(), lr=0.1), str(tmp_path / "s"), layers=["0"])


def test_parametrized_weight_is_refused_by_name_and_warned(tmp_path, blobs, helpers):
    model = helpers.mlp()
    nn.utils.parametrizations.weight_norm(model[2])
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(DualFormError, match=r"layer 2 \(ParametrizedLinear\).*parametrization"):
        DualRecorder(model, opt, str(tmp_path / "a"), layers=["0", "2"])
    with pytest.warns(UnrecordedLayerWarning, match=r"2 \(ParametrizedLinear\).*parametrization"):
        store = _train(model, tmp_path / "b", *blobs, steps=3)
    assert store.layer_names == ["0", "4"]


def test_frozen_bias_with_trainable_weight_is_accepted(tmp_path, blobs, helpers):
    x, y = blobs
    model = helpers.mlp()
    model[2].bias.requires_grad_(False)
    b0 = model[2].bias.detach().clone()
    store = _train(model, tmp_path / "s", x, y)
    _assert_exact(store, model, helpers)
    assert torch.equal(reconstruct_layer(store, "2")[1].float(), b0)


def test_float64_storage_reconstructs_fp64_training_to_1e12(tmp_path, blobs, helpers):
    x, y = blobs
    model = helpers.mlp().double()
    store = _train(model, tmp_path / "s", x.double(), y, dtype="float64")
    assert str(store.shards(0)[0].keys.dtype) == "float64"
    _assert_exact(store, model, helpers, tol=1e-12)
