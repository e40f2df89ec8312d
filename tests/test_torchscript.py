"""TorchScript is not supported; torch.jit.script says so and names what works instead, and
the alternatives it names (torch.jit.trace, torch.export) do work."""

import warnings

import pytest
import torch

import fastlstm


class Tagger(torch.nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.rnn = fastlstm.LSTM(3, 4, bidirectional=True)

    def forward(self, x, lengths: torch.Tensor):
        return self.rnn(x, lengths=lengths)[0]


@pytest.mark.parametrize("what", ["module", "nested"])
def test_script_raises_naming_the_alternatives(what):
    model = fastlstm.LSTM(3, 4) if what == "module" else Tagger()
    with pytest.raises(RuntimeError) as info:
        torch.jit.script(model)
    msg = str(info.value)
    assert type(info.value) is fastlstm.modules.TorchScriptNotSupportedError
    for name in ("fastlstm.LSTM", "TorchScript", "torch.compile", "torch.jit.trace",
                 "torch.export", "fastlstm.revert"):
        assert name in msg, (name, msg)


def test_script_after_revert_works():
    model = fastlstm.revert(Tagger())
    x = torch.randn(5, 2, 3)
    scripted = torch.jit.script(torch.nn.Sequential(model.rnn))
    torch.testing.assert_close(scripted(x)[0], model.rnn(x)[0])


def test_trace_and_export_work_with_new_lengths():
    model = Tagger()
    x = torch.randn(5, 2, 3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        # check_trace=False: its re-trace compares TorchScript type names, which are mangled
        # (___torch_mangle_N) once another test in the process has tried to script this class.
        # The outputs below are what this test judges.
        traced = torch.jit.trace(model, (x, torch.tensor([5, 3])), check_trace=False)
    exported = torch.export.export(model, (x, torch.tensor([5, 3]))).module()
    for lengths in ([5, 3], [2, 4], [0, 5]):
        lengths = torch.tensor(lengths)
        want = model(x, lengths)
        torch.testing.assert_close(traced(x, lengths), want)
        torch.testing.assert_close(exported(x, lengths), want)
