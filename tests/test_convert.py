"""fastlstm.convert / fastlstm.revert on a nested model: every nn.LSTM is swapped in place,
keeping parameters (the same objects), device, dtype, train/eval mode and hooks, and the
model's outputs and gradients stay those of the original nn.LSTM model (the judge)."""

import copy
import warnings

import pytest
import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

import fastlstm
from helpers import assert_close


class Encoder(nn.Module):
    """Packs its input around the LSTM, as nn.LSTM code usually does."""

    def __init__(self):
        super().__init__()
        self.rnn = nn.LSTM(6, 5, num_layers=2, bidirectional=True, batch_first=True,
                           dtype=torch.float64)

    def forward(self, x, lengths):
        packed = pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
        out, (h, c) = self.rnn(packed)
        out, _ = pad_packed_sequence(out, batch_first=True, total_length=x.shape[1])
        return out, h, c


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.embed = nn.Linear(4, 6, dtype=torch.float64)
        self.encoder = Encoder()
        shared = nn.LSTM(10, 3, dtype=torch.float64)              # used twice: one module
        self.stack = nn.ModuleList([shared, nn.Sequential(shared)])
        self.heads = nn.ModuleDict({
            "proj": nn.LSTM(10, 4, proj_size=2, dtype=torch.float64),
            "gru": nn.GRU(10, 3, dtype=torch.float64),             # not an LSTM: untouched
        })

    def forward(self, x, lengths):
        e = torch.tanh(self.embed(x))
        out, h, c = self.encoder(e, lengths)
        tm = out.transpose(0, 1)                                   # time-major
        a, _ = self.stack[0](tm)
        b, _ = self.stack[1](tm)
        p, (hp, cp) = self.heads["proj"](tm)
        g, _ = self.heads["gru"](tm)
        return [out, h, c, a, b, p, hp, cp, g]


def lstm_modules(model, kind):
    return [name for name, m in model.named_modules() if type(m) is kind]


def run(model, x, lengths):
    model.zero_grad(set_to_none=True)
    outs = model(x, lengths)
    gen = torch.Generator().manual_seed(7)
    loss = sum((o * torch.randn(o.shape, generator=gen, dtype=o.dtype)).sum() for o in outs)
    loss.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    return [o.detach() for o in outs], grads


@pytest.fixture()
def setup():
    torch.manual_seed(0)
    model = Net()
    model.train()
    model.heads.eval()                          # a mixed train/eval model
    x = torch.randn(3, 7, 4, dtype=torch.float64)
    lengths = torch.tensor([7, 2, 5])
    return model, x, lengths


def test_convert_nested_model(setup):
    model, x, lengths = setup
    want_outs, want_grads = run(model, x, lengths)
    params_before = dict(model.named_parameters())
    state_before = copy.deepcopy(model.state_dict())
    modes_before = {n: m.training for n, m in model.named_modules()}
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)   # built before conversion

    returned = fastlstm.convert(model)

    assert returned is model
    assert lstm_modules(model, nn.LSTM) == []
    # The shared LSTM is one module, under both of its names.
    assert lstm_modules(model, fastlstm.LSTM) == ["encoder.rnn", "stack.0", "heads.proj"]
    assert model.stack[0] is model.stack[1][0]
    assert type(model.heads["gru"]) is nn.GRU
    # Same Parameter objects, same state_dict (keys and values), same modes.
    assert {n: id(p) for n, p in model.named_parameters()} == \
        {n: id(p) for n, p in params_before.items()}
    state = model.state_dict()
    assert list(state) == list(state_before)
    for k in state:
        assert torch.equal(state[k], state_before[k]), k
    assert {n: m.training for n, m in model.named_modules()} == modes_before
    assert model.encoder.rnn.training and not model.heads["proj"].training
    for p in model.parameters():
        assert p.dtype == torch.float64 and p.device.type == "cpu"
    assert model.heads["proj"].proj_size == 2 and model.encoder.rnn.bidirectional

    got_outs, got_grads = run(model, x, lengths)
    for i, (g, w) in enumerate(zip(got_outs, want_outs)):
        assert_close(f"output {i}", g, w)
    assert set(got_grads) == set(want_grads)
    for n in want_grads:
        assert_close("grad." + n, got_grads[n], want_grads[n])

    # The optimizer built before conversion updates the converted modules' weights.
    weight = model.encoder.rnn.weight_hh_l1_reverse
    before = weight.detach().clone()
    optimizer.step()
    assert not torch.equal(weight, before)
    assert torch.equal(weight, before.add(weight.grad, alpha=-0.1))


def test_revert_round_trip(setup):
    model, x, lengths = setup
    want_outs, want_grads = run(model, x, lengths)
    params_before = {n: id(p) for n, p in model.named_parameters()}
    fastlstm.convert(model)
    returned = fastlstm.revert(model)
    assert returned is model
    assert lstm_modules(model, fastlstm.LSTM) == []
    assert lstm_modules(model, nn.LSTM) == ["encoder.rnn", "stack.0", "heads.proj"]
    assert model.stack[0] is model.stack[1][0]
    assert {n: id(p) for n, p in model.named_parameters()} == params_before
    assert model.encoder.rnn.training and not model.heads["proj"].training
    got_outs, got_grads = run(model, x, lengths)
    # Back on nn.LSTM itself: bit for bit what it computed before.
    for i, (g, w) in enumerate(zip(got_outs, want_outs)):
        assert torch.equal(g, w), f"output {i}"
    for n in want_grads:
        assert torch.equal(got_grads[n], want_grads[n]), n
    # nn.LSTM's cached weight list follows the shared parameters after a later in-place edit.
    with torch.no_grad():
        model.encoder.rnn.weight_ih_l0.add_(0.5)
    fresh = nn.LSTM(6, 5, num_layers=2, bidirectional=True, batch_first=True,
                    dtype=torch.float64)
    fresh.load_state_dict(model.encoder.rnn.state_dict())
    e = torch.randn(2, 4, 6, dtype=torch.float64)
    assert torch.equal(model.encoder.rnn(e)[0], fresh(e)[0])


def test_converted_lstm_takes_lengths(setup):
    """After conversion the padded call with lengths= equals the packed nn.LSTM call."""
    model, x, lengths = setup
    e = torch.tanh(model.embed(x)).detach()
    want, h_want, c_want = model.encoder(e, lengths)
    fastlstm.convert(model)
    out, (h, c) = model.encoder.rnn(e, lengths=lengths)
    assert_close("output", out, want)
    assert_close("h_n", h, h_want)
    assert_close("c_n", c, c_want)
    assert torch.all(out[1, 2:] == 0) and torch.all(out[2, 5:] == 0)


def test_root_module_and_hooks():
    torch.manual_seed(0)
    ref = nn.LSTM(3, 4, dtype=torch.float64).eval()
    calls = []
    handle = ref.register_forward_hook(lambda m, args, out: calls.append(type(m)))
    x = torch.randn(5, 2, 3, dtype=torch.float64)
    want, (h_want, c_want) = ref(x)
    fast = fastlstm.convert(ref)                   # a module cannot replace itself
    assert type(fast) is fastlstm.LSTM and not fast.training
    assert fast.weight_ih_l0 is ref.weight_ih_l0
    out, (h, c) = fast(x)
    assert_close("output", out, want)
    assert_close("h_n", h, h_want)
    assert calls == [nn.LSTM, fastlstm.LSTM]       # the hook moved with the weights
    handle.remove()                                # and its handle still removes it
    fast(x)
    assert len(calls) == 2
    back = fastlstm.revert(fast)
    assert type(back) is nn.LSTM and back.weight_hh_l0 is ref.weight_hh_l0
    assert torch.equal(back(x)[0], want)


def test_subclass_left_alone_with_warning():
    class MyLSTM(nn.LSTM):
        def forward(self, x, hx=None):
            return super().forward(x * 2, hx)

    model = nn.Sequential(nn.Linear(3, 3), MyLSTM(3, 4))
    with pytest.warns(UserWarning, match=r"left 1 \(.*MyLSTM, a subclass of torch.nn"):
        fastlstm.convert(model)
    assert type(model[1]) is MyLSTM
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fastlstm.convert(nn.Sequential(nn.LSTM(3, 4)))   # no warning for plain nn.LSTM


def test_not_a_module():
    with pytest.raises(TypeError, match="model must be a torch.nn.Module, got dict"):
        fastlstm.convert({"rnn": nn.LSTM(3, 4)})


class Aliased(nn.Module):
    """One LSTM under two names of the same parent, as libraries do for backward-compatible
    attribute names (self.rnn = self.encoder = nn.LSTM(...))."""

    def __init__(self):
        super().__init__()
        self.rnn = nn.LSTM(3, 4, dtype=torch.float64)
        self.encoder = self.rnn
        self.layers = nn.ModuleList([nn.LSTM(4, 2, dtype=torch.float64)] * 2)

    def forward(self, x):
        a, _ = self.rnn(x)
        b, _ = self.encoder(x)
        return self.layers[1](a + b)[0]


def test_convert_module_under_two_names_in_one_parent():
    torch.manual_seed(0)
    model = Aliased()
    x = torch.randn(5, 2, 3, dtype=torch.float64)
    want = model(x)
    fastlstm.convert(model)
    assert type(model.rnn) is fastlstm.LSTM and type(model.encoder) is fastlstm.LSTM
    assert model.rnn is model.encoder
    assert type(model.layers[0]) is fastlstm.LSTM and model.layers[0] is model.layers[1]
    assert_close("output", model(x), want)
    fastlstm.revert(model)
    assert type(model.rnn) is nn.LSTM and model.rnn is model.encoder
    assert type(model.layers[1]) is nn.LSTM and model.layers[0] is model.layers[1]


MODEL_SOURCE = '''
import torch
from torch import nn


class Tagger(nn.Module):
    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(20, 6)
        self.rnn = nn.LSTM(6, 5, num_layers=2, bidirectional=True, batch_first=True,
                           dropout=0.3)
        self.encoder = self.rnn                          # an alias, as libraries keep
        self.proj = nn.LSTM(10, 4, proj_size=2)
        self.head = nn.Linear(2, 3)

    def forward(self, ids, lengths=None):
        kw = {} if lengths is None else {"lengths": lengths}
        out, _ = self.encoder(self.embed(ids), **kw)
        out, _ = self.proj(out.transpose(0, 1), **kw)
        return self.head(out)
'''

CHILD = '''
import sys, torch
import tagger_model
kind, path = sys.argv[1], sys.argv[2]
ids = torch.arange(14).reshape(2, 7) % 20
if kind == "whole":
    model = torch.load(path + "/model.pt", weights_only=False)   # fastlstm imported by pickle
    import fastlstm
    assert type(model.rnn) is fastlstm.LSTM and model.rnn is model.encoder, type(model.encoder)
    assert type(model.proj) is fastlstm.LSTM
    out = model(ids, lengths=[7, 4])
else:
    model = tagger_model.Tagger().eval()                         # fresh, not converted
    print(model.load_state_dict(torch.load(path + "/state.pt")))
    assert type(model.rnn) is torch.nn.LSTM
    out = model(ids)
assert not model.training
torch.save(out, path + "/out-" + kind + ".pt")
'''


def test_converted_model_survives_save_and_load_in_fresh_process(tmp_path):
    import subprocess
    import sys
    (tmp_path / "tagger_model.py").write_text(MODEL_SOURCE)
    (tmp_path / "child.py").write_text(CHILD)
    sys.path.insert(0, str(tmp_path))
    try:
        import tagger_model
        torch.manual_seed(0)
        model = tagger_model.Tagger().eval()
        ids = torch.arange(14).reshape(2, 7) % 20
        want_full = model(ids)                                  # nn.LSTM, the judge
        fastlstm.convert(model)
        assert type(model.encoder) is fastlstm.LSTM and model.encoder is model.rnn
        want_lengths = model(ids, lengths=[7, 4])
        torch.save(model, tmp_path / "model.pt")
        torch.save(model.state_dict(), tmp_path / "state.pt")
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop("tagger_model", None)
    repo = str(__import__("pathlib").Path(fastlstm.__file__).parent.parent)
    env = dict(__import__("os").environ, PYTHONPATH=f"{tmp_path}:{repo}")
    for kind in ("whole", "state"):
        proc = subprocess.run([sys.executable, str(tmp_path / "child.py"), kind, str(tmp_path)],
                              env=env, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr[-3000:]
    assert_close("whole model, lengths", torch.load(tmp_path / "out-whole.pt"),
                 want_lengths.detach())
    assert_close("state_dict into nn.LSTM model", torch.load(tmp_path / "out-state.pt"),
                 want_full.detach())
