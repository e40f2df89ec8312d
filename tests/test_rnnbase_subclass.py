"""Item: could fastlstm.LSTM subclass nn.RNNBase (isinstance(m, nn.RNNBase) True) without
losing fullgraph torch.compile and nn.LSTM's parameter/state_dict behaviour?

Measured on a prototype, LSTMOnRNNBase below: nn.RNNBase.__init__ for the parameters, and
fastlstm.LSTM's forward. These tests pin what was found (README, "Differences from nn.LSTM"):
- Dynamo refuses only instances of nn.RNN/GRU/LSTM (without allow_rnn); an nn.RNNBase
  subclass compiles with fullgraph=True, and its parameters and state_dict are nn.LSTM's;
- subclassing nn.LSTM itself breaks fullgraph compile, so isinstance(m, nn.LSTM) cannot be
  had this way.
"""

import pytest
import torch
from torch import nn

import fastlstm
from fastlstm.modules import LSTM


class LSTMOnRNNBase(nn.RNNBase):
    def __init__(self, *args, **kwargs):
        super().__init__("LSTM", *args, **kwargs)

    forward = LSTM.forward
    _check_input = LSTM._check_input
    _forward_time_major = LSTM._forward_time_major
    _forward_packed = LSTM._forward_packed


class LSTMOnLSTM(nn.LSTM):
    forward = LSTM.forward
    _check_input = LSTM._check_input
    _forward_time_major = LSTM._forward_time_major
    _forward_packed = LSTM._forward_packed


def _compile_count(cls):
    from torch._dynamo.testing import CompileCounterWithBackend
    torch._dynamo.reset()
    torch.manual_seed(0)
    m = cls(3, 4, num_layers=2, bidirectional=True)
    counter = CompileCounterWithBackend("aot_eager")
    compiled = torch.compile(m, backend=counter, fullgraph=True)
    x = torch.randn(5, 2, 3, requires_grad=True)
    out, _ = compiled(x, lengths=torch.tensor([5, 3]))
    torch.testing.assert_close(out, m(x, lengths=torch.tensor([5, 3]))[0])
    out.sum().backward()
    return m


def test_rnnbase_subclass_compiles_fullgraph_and_keeps_state_dict():
    m = _compile_count(LSTMOnRNNBase)
    assert isinstance(m, nn.RNNBase) and not isinstance(m, nn.LSTM)
    torch.manual_seed(0)
    ref = nn.LSTM(3, 4, num_layers=2, bidirectional=True)
    assert [n for n, _ in m.named_parameters()] == [n for n, _ in ref.named_parameters()]
    for (_, a), (_, b) in zip(m.named_parameters(), ref.named_parameters()):
        assert torch.equal(a, b)      # same initialisation, same order
    ref.load_state_dict(m.state_dict())
    x = torch.randn(5, 2, 3)
    torch.testing.assert_close(m(x)[0], ref(x)[0])


def test_lstm_subclass_breaks_fullgraph_compile():
    with pytest.raises(torch._dynamo.exc.Unsupported, match="RNN, GRU, or LSTM"):
        _compile_count(LSTMOnLSTM)


def test_fastlstm_lstm_is_neither():
    m = fastlstm.LSTM(3, 4)
    assert not isinstance(m, nn.LSTM) and not isinstance(m, nn.RNNBase)
