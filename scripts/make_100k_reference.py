"""Writes tests/data/lstm_100k_reference.pt, the stored CPU reference of tests/test_cuda.py's
test_100k_steps_against_cpu_float64 (nn.LSTM in float64 on the CPU: ~40 s on 2 cores, too long
for the GPU session). Run it here, on the CPU, after changing that test's inputs or steps:

    .venv/bin/python scripts/make_100k_reference.py           # writes the file
    .venv/bin/python scripts/make_100k_reference.py --check   # recomputes and compares

What it stores and why: tests/test_cuda.py, above inputs_100k().
"""

import argparse
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests"))

import torch  # noqa: E402

import test_cuda  # noqa: E402


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--check", action="store_true",
                   help="recompute and compare with the stored file instead of writing it")
    args = p.parse_args(argv)
    ref = test_cuda.reference_100k()
    if args.check:
        stored = torch.load(test_cuda.REFERENCE_100K, weights_only=True)
        assert torch.equal(stored["steps"], ref["steps"]), "steps differ"
        torch.testing.assert_close(stored["checksums"], ref["checksums"], rtol=1e-12, atol=0)
        for k, v in ref["values"].items():
            torch.testing.assert_close(stored["values"][k], v, rtol=1e-6, atol=1e-9,
                                       msg=lambda m: f"{k}: {m}")
        print(f"{test_cuda.REFERENCE_100K}: matches a fresh computation")
        return 0
    os.makedirs(os.path.dirname(test_cuda.REFERENCE_100K), exist_ok=True)
    torch.save(ref, test_cuda.REFERENCE_100K)
    print(f"wrote {test_cuda.REFERENCE_100K} ({os.path.getsize(test_cuda.REFERENCE_100K)} bytes, "
          f"{len(ref['steps'])} steps kept)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
