"""Smoke test of an installed fastlstm wheel, run from outside the source tree by
scripts/ci_wheel.sh and scripts/gpu_session.sh: the wheel holds the extension and every module, the import comes from
the installed wheel, and forward+backward match nn.LSTM on packed input (CPU; CUDA too where a
GPU is present).

    python -I wheel_smoke.py WHEEL --source SRC/fastlstm [--expect-cuda] [--site DIR]

--site: where the wheel was installed, when not this interpreter's site-packages (pip install
--target DIR, with DIR on PYTHONPATH: how scripts/gpu_session.sh tests it without a network).
"""

import argparse
import fnmatch
import os
import sys
import sysconfig
import zipfile

import torch
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

CHECKS = []


def check(fn):
    CHECKS.append(fn)
    return fn


@check
def wheel_has_extension_and_every_module(args):
    names = zipfile.ZipFile(args.wheel).namelist()
    assert fnmatch.filter(names, "fastlstm/_C*.so"), f"no fastlstm/_C*.so in {names}"
    sources = {f"fastlstm/{f}" for f in os.listdir(args.source) if f.endswith(".py")}
    missing = sources - set(names)
    assert not missing, f"modules missing from the wheel: {sorted(missing)}"


@check
def import_comes_from_the_installed_wheel(args):
    import fastlstm
    site = ({os.path.realpath(args.site)} if args.site else
            {os.path.realpath(sysconfig.get_paths()[k]) for k in ("purelib", "platlib")})
    for mod in (fastlstm, fastlstm._C):
        where = os.path.realpath(mod.__file__)
        assert any(where.startswith(s + os.sep) for s in site), f"{mod.__name__} from {where}"
        assert not where.startswith(os.path.realpath(args.source)), where
    print(f"  fastlstm {fastlstm.__version__} from {os.path.dirname(fastlstm.__file__)}")


@check
def wheel_is_abi3_and_tagged_for_its_cuda(args):
    # One wheel for every torch >= 2.10 and CPython >= 3.10: tagged cp310-abi3, the version's
    # local tag naming only the CUDA major version it needs (cu13) or cpu.
    from importlib.metadata import version
    name = os.path.basename(args.wheel)
    assert name.startswith(f"fastlstm-{version('fastlstm')}-cp310-abi3-"), \
        (name, version("fastlstm"))
    local = version("fastlstm").split("+")[1]
    if args.expect_cuda:
        assert local == "cu" + torch.version.cuda.split(".")[0], local
        assert torch._C._dispatch_has_kernel_for_dispatch_key(
            "fastlstm::lstm_layer_forward", "CUDA"), "no CUDA kernel registered"
    else:
        assert local in ("cpu", "cu" + (torch.version.cuda or "").split(".")[0]), local


def _parity(device):
    import fastlstm
    torch.manual_seed(0)
    kw = dict(num_layers=2, bidirectional=True, device=device, dtype=torch.float64)
    ref = torch.nn.LSTM(6, 8, **kw)
    fast = fastlstm.LSTM(6, 8, **kw)
    fast.load_state_dict(ref.state_dict())
    lengths = torch.tensor([9, 1, 5, 9, 3])
    x = torch.randn(9, 5, 6, device=device, dtype=torch.float64)
    results = []
    for model in (ref, fast):
        xi = x.clone().requires_grad_()
        if model is ref:
            out, (h, c) = ref(pack_padded_sequence(xi, lengths, enforce_sorted=False))
            out, _ = pad_packed_sequence(out, total_length=9)
        else:
            out, (h, c) = fast(xi, lengths=lengths)
        (out.square().sum() + h.square().sum() + c.square().sum()).backward()
        results.append([out, h, c, xi.grad] + [p.grad for p in model.parameters()])
    for e, g in zip(*results):
        torch.testing.assert_close(g, e, atol=1e-10, rtol=1e-10)


@check
def forward_backward_match_nn_lstm_cpu(args):
    _parity("cpu")


@check
def forward_backward_match_nn_lstm_cuda(args):
    if not torch.cuda.is_available():
        print("  (skipped: no CUDA device)")
        return
    _parity("cuda")


def main():
    p = argparse.ArgumentParser()
    p.add_argument("wheel")
    p.add_argument("--source", required=True, help="the source tree's fastlstm/ folder")
    p.add_argument("--expect-cuda", action="store_true", help="the wheel must hold CUDA kernels")
    p.add_argument("--site", help="the folder the wheel was installed into (pip --target)")
    args = p.parse_args()
    failed = 0
    for fn in CHECKS:
        try:
            fn(args)
            print(f"ok   {fn.__name__}")
        except Exception as e:  # report every check, then fail
            failed += 1
            print(f"FAIL {fn.__name__}: {type(e).__name__}: {e}")
    print(f"smoke: {len(CHECKS) - failed} passed, {failed} failed")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
