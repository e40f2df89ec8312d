"""ONNX export of fastlstm.LSTM to the standard ONNX LSTM operator with sequence_lens.

The exported model runs in onnxruntime on new inputs with variable lengths (zero included) and
new batch and time sizes (dynamic shapes); it must match eager fastlstm and nn.LSTM over
packed sequences (the judge), with outputs exactly 0 past each length."""

import os

import pytest
import torch
from torch import nn

import fastlstm
from helpers import make_pair, reference_forward

onnx = pytest.importorskip("onnx", reason="needs onnx (pip install onnx)")
pytest.importorskip("onnxscript", reason="needs onnxscript (pip install onnxscript)")
ort = pytest.importorskip("onnxruntime", reason="needs onnxruntime (pip install onnxruntime)")

# float32: onnxruntime's LSTM and fastlstm round differently (both use fast exp/tanh
# approximations). Measured max abs diff <= 2.4e-7 on these shapes (5 seeds); 2e-6 leaves
# ~8x room; a wrong gate order or a lost initial state fails it.
ATOL, RTOL = 2e-6, 1e-5


class Tagger(nn.Module):
    """Embedding-free model around the LSTM: lengths and the initial state are inputs."""

    def __init__(self, lstm):
        super().__init__()
        self.lstm = lstm
        self.head = nn.Linear(lstm.hidden_size * (2 if lstm.bidirectional else 1), 3)

    def forward(self, x, lengths, h0, c0):
        out, (h, c) = self.lstm(x, (h0, c0), lengths=lengths)
        return self.head(out), out, h, c


CONFIGS = [
    dict(num_layers=1, bidirectional=False, batch_first=True),
    dict(num_layers=1, bidirectional=True, batch_first=False),
    dict(num_layers=2, bidirectional=False, batch_first=False),
    dict(num_layers=2, bidirectional=True, batch_first=True),
]


def session(path):
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1     # small graphs; spinning threads hurt a busy machine
    return ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])


def inputs(B, T, cfg, seed, lengths):
    gen = torch.Generator().manual_seed(seed)
    D = 2 if cfg["bidirectional"] else 1
    shape = (B, T, 5) if cfg["batch_first"] else (T, B, 5)
    x = torch.randn(shape, generator=gen)
    h0 = torch.randn(cfg["num_layers"] * D, B, 6, generator=gen)
    c0 = torch.randn(cfg["num_layers"] * D, B, 6, generator=gen)
    return x, torch.tensor(lengths), h0, c0


@pytest.mark.filterwarnings("ignore:# The axis name")   # one Dim used by several inputs
@pytest.mark.parametrize("cfg", CONFIGS, ids=lambda c: f"L{c['num_layers']}-"
                         f"{'bi' if c['bidirectional'] else 'uni'}-"
                         f"{'bf' if c['batch_first'] else 'tm'}")
def test_export_matches_eager_and_nn_lstm(cfg, tmp_path):
    ref, fast = make_pair(5, 6, dtype=torch.float32, seed=3, **cfg)
    torch.manual_seed(4)
    model = Tagger(fast).eval()
    example = inputs(3, 4, cfg, seed=0, lengths=[4, 2, 1])
    batch, time = torch.export.Dim("batch"), torch.export.Dim("time")
    bt = {0: batch, 1: time} if cfg["batch_first"] else {0: time, 1: batch}
    path = os.path.join(tmp_path, "model.onnx")
    fastlstm.export_onnx(model, example, path,
                         input_names=["x", "lengths", "h0", "c0"],
                         output_names=["logits", "output", "h_n", "c_n"],
                         dynamic_shapes=(bt, {0: batch}, {1: batch}, {1: batch}))

    # The graph: one standard LSTM node per layer, fed sequence_lens; no custom op left.
    proto = onnx.load(path)
    onnx.checker.check_model(proto, full_check=True)
    graph = proto.graph
    lstm_nodes = [n for n in graph.node if n.op_type == "LSTM"]
    assert len(lstm_nodes) == cfg["num_layers"]
    assert all(n.domain in ("", "ai.onnx") for n in graph.node)
    for node in lstm_nodes:
        attrs = {a.name: a for a in node.attribute}
        want_dir = b"bidirectional" if cfg["bidirectional"] else b"forward"
        assert attrs["direction"].s == want_dir
        assert len(node.input) >= 5 and node.input[4], "sequence_lens is not wired"

    # New batch and time sizes; lengths in any order, with 0, 1 and full.
    lengths = [7, 0, 3, 1, 7, 5]
    x, L, h0, c0 = inputs(6, 7, cfg, seed=1, lengths=lengths)
    logits, out, h_n, c_n = session(path).run(None, {"x": x.numpy(), "lengths": L.numpy(),
                                               "h0": h0.numpy(), "c0": c0.numpy()})
    with torch.no_grad():
        e_logits, e_out, e_h, e_c = model(x, L, h0, c0)
        j_out, j_h, j_c = reference_forward(ref, x, lengths, (h0, c0))   # nn.LSTM, packed
    for name, got, eager, judge in (("output", out, e_out, j_out), ("h_n", h_n, e_h, j_h),
                                    ("c_n", c_n, e_c, j_c), ("logits", logits, e_logits, None)):
        got = torch.from_numpy(got)
        assert got.shape == eager.shape, name
        torch.testing.assert_close(got, eager, atol=ATOL, rtol=RTOL, msg=lambda m: f"{name}: {m}")
        if judge is not None:
            torch.testing.assert_close(got, judge, atol=ATOL, rtol=RTOL,
                                       msg=lambda m: f"{name} vs nn.LSTM: {m}")
    out = torch.from_numpy(out)
    rows = out if cfg["batch_first"] else out.transpose(0, 1)
    for b, n in enumerate(lengths):
        assert torch.all(rows[b, n:] == 0), f"output of sequence {b} not 0 past its length {n}"
        if n:
            assert torch.all(rows[b, n - 1] != 0)
    # Zero length: h_n, c_n are the initial state, exactly.
    assert torch.equal(torch.from_numpy(h_n)[:, 1], h0[:, 1])
    assert torch.equal(torch.from_numpy(c_n)[:, 1], c0[:, 1])


@pytest.mark.filterwarnings("ignore:# The axis name")   # one Dim used by several inputs
def test_export_frozen_model_uses_inference_op(tmp_path):
    """Weights that need no gradient: the exported program holds lstm_layer_inference, which
    translates to the same ONNX LSTM."""
    cfg = dict(num_layers=2, bidirectional=True, batch_first=False)
    ref, fast = make_pair(5, 6, dtype=torch.float32, seed=3, **cfg)
    model = Tagger(fast).eval().requires_grad_(False)
    example = inputs(3, 4, cfg, seed=0, lengths=[4, 2, 1])
    ops = {str(n.target) for n in torch.export.export(model, example).graph.nodes
           if n.op == "call_function"}
    assert any("lstm_layer_inference" in o for o in ops), ops
    path = os.path.join(tmp_path, "model.onnx")
    batch, time = torch.export.Dim("batch"), torch.export.Dim("time")
    fastlstm.export_onnx(model, example, path, input_names=["x", "lengths", "h0", "c0"],
                         output_names=["logits", "output", "h_n", "c_n"],
                         dynamic_shapes=({0: time, 1: batch}, {0: batch}, {1: batch},
                                         {1: batch}))
    proto = onnx.load(path)
    assert len([n for n in proto.graph.node if n.op_type == "LSTM"]) == 2
    lengths = [7, 0, 3, 1]
    x, L, h0, c0 = inputs(4, 7, cfg, seed=1, lengths=lengths)
    _, out, h_n, c_n = session(path).run(None, {"x": x.numpy(), "lengths": L.numpy(),
                                                "h0": h0.numpy(), "c0": c0.numpy()})
    j_out, j_h, j_c = reference_forward(ref, x, lengths, (h0, c0))
    for name, got, judge in (("output", out, j_out), ("h_n", h_n, j_h), ("c_n", c_n, j_c)):
        torch.testing.assert_close(torch.from_numpy(got), judge.detach(), atol=ATOL, rtol=RTOL,
                                   msg=lambda m: f"{name} vs nn.LSTM: {m}")


def test_export_without_state_or_lengths_inputs(tmp_path):
    """hx=None (zeros) and lengths as the only extra input: the common inference model."""
    _, fast = make_pair(5, 6, dtype=torch.float32, seed=5, bidirectional=True,
                        batch_first=True)

    class Encoder(nn.Module):
        def __init__(self):
            super().__init__()
            self.lstm = fast

        def forward(self, x, lengths):
            return self.lstm(x, lengths=lengths)[1][0]    # h_n

    model = Encoder().eval()
    x = torch.randn(4, 6, 5)
    path = os.path.join(tmp_path, "encoder.onnx")
    fastlstm.export_onnx(model, (x, torch.tensor([6, 2, 4, 1])), path,
                         input_names=["x", "lengths"])
    L = torch.tensor([3, 6, 1, 5])
    (h_n,) = session(path).run(None, {"x": x.numpy(), "lengths": L.numpy()})
    with torch.no_grad():
        want = model(x, L)
    torch.testing.assert_close(torch.from_numpy(h_n), want, atol=ATOL, rtol=RTOL)


def test_proj_size_raises_clear_error(tmp_path):
    model = nn.Sequential()
    model.add_module("enc", fastlstm.LSTM(5, 6, proj_size=3))
    model.eval()
    with pytest.raises(ValueError, match=r"proj_size > 0 \(LSTM with projections\) has no ONNX "
                                         r"equivalent.*Expected proj_size=0, got proj_size=3 "
                                         r"in module 'enc'"):
        fastlstm.export_onnx(model, (torch.randn(4, 2, 5),), os.path.join(tmp_path, "p.onnx"))
    # Through torch.onnx.export directly with the translation table, the error surfaces too.
    with pytest.raises(Exception) as info:
        torch.onnx.export(model, (torch.randn(4, 2, 5),), os.path.join(tmp_path, "q.onnx"),
                          dynamo=True,
                          custom_translation_table=fastlstm.onnx_translation_table())
    chain, e = [], info.value
    while e is not None:
        chain.append(str(e))
        e = e.__cause__
    assert any("has no ONNX equivalent" in m for m in chain), chain


def test_dynamo_false_is_refused():
    with pytest.raises(ValueError, match="expected dynamo=True, got dynamo=False"):
        fastlstm.export_onnx(fastlstm.LSTM(2, 3), (torch.randn(2, 1, 2),), dynamo=False)
