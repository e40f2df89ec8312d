"""Bad lengths on a torch.compile'd fastlstm.LSTM (backend "aot_eager", the cheapest) raise a
clear error, as in eager: the same exception type and message, naming `lengths`.

Under torch.compile the Python value checks are skipped (reading tensor values would break the
graph) and the native op checks the values; shape and dtype checks run while tracing.
"""

import pytest
import torch

import fastlstm

T, B, I, H = 5, 3, 3, 4

# name: (lengths, checked while tracing). Values are checked by the native op at run time;
# types, shapes and dtypes while dynamo traces the Python checks.
BAD_LENGTHS = {
    "negative_tensor": (lambda: torch.tensor([5, -1, 3]), False),
    "above_T_tensor": (lambda: torch.tensor([5, 6, 3]), False),
    "int32_above_T": (lambda: torch.tensor([5, 1, 2**31 - 1], dtype=torch.int32), False),
    "negative_list": (lambda: [5, -1, 3], False),
    "above_T_list": (lambda: [5, 6, 3], False),
    "too_many_tensor": (lambda: torch.tensor([5, 1, 3, 2]), True),
    "2d_tensor": (lambda: torch.tensor([[5, 1, 3]]), True),
    "float_tensor": (lambda: torch.tensor([5.0, 1.0, 3.0]), True),
    "bool_tensor": (lambda: torch.tensor([True, True, False]), True),
    "too_few_list": (lambda: [5, 1], True),
    "float_list": (lambda: [5.0, 1, 3], True),
    "string": (lambda: "5,1,3", True),
}
# With fullgraph=True dynamo cannot fall back to eager: an exception raised by the Python
# checks while tracing comes out as torch._dynamo.exc.Unsupported("Observed exception"), the
# real message only in its "developer debug context" (with symbolic shapes such as "s73").
# Not a clear error: fixing it belongs to fastlstm/_inputs.py / modules.py. Strict xfail, so
# these start failing (XPASS) once it is fixed and the marks must go.
UNCLEAR_UNDER_FULLGRAPH = ("dynamo wraps errors raised while tracing in Unsupported('Observed "
                           "exception') under fullgraph=True; to fix in fastlstm/_inputs.py")


def cases():
    out = []
    for name, (_, at_trace) in BAD_LENGTHS.items():
        marks = [pytest.mark.xfail(strict=True, reason=UNCLEAR_UNDER_FULLGRAPH)] if at_trace \
            else []
        out.append(pytest.param(name, True, marks=marks, id=f"{name}-fullgraph"))
    for name in ("negative_tensor", "2d_tensor", "float_list"):
        out.append(pytest.param(name, False, id=f"{name}-graph_breaks_ok"))
    return out


@pytest.mark.parametrize("case,fullgraph", cases())
def test_bad_lengths_raise_under_compile(case, fullgraph):
    from torch._dynamo.testing import CompileCounterWithBackend
    torch.manual_seed(0)
    model = fastlstm.LSTM(I, H)
    x = torch.randn(T, B, I)
    make, at_trace = BAD_LENGTHS[case]
    lengths = make()
    with pytest.raises((ValueError, TypeError)) as info:
        model(x, lengths=lengths)
    expected = info.value
    assert "lengths" in str(expected), f"eager error does not name lengths: {expected}"
    want = str(expected).replace("fastlstm: ", "")

    torch._dynamo.reset()
    counter = CompileCounterWithBackend("aot_eager")
    compiled = torch.compile(model, backend=counter, fullgraph=fullgraph)
    with pytest.raises(Exception) as info:
        compiled(x, lengths=lengths)
    err = info.value
    print(f"{case}: eager {type(expected).__name__}: {want}\n  compiled {type(err).__name__}: "
          f"{str(err)[:300]}")
    if not at_trace:
        assert counter.frame_count == 1, "the compiled graph did not run"
    # The same exception type as eager (the native op raises the same ValueError / TypeError
    # as the Python checks), with the eager message.
    assert isinstance(err, type(expected)), f"{type(err).__name__}: {err}"
    assert want in str(err).replace("fastlstm: ", ""), str(err)
