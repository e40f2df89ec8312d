"""The import-time check that the torch fastlstm is imported into fits this build of
fastlstm._C: a CUDA build (+cu13, +cu12) links libcudart.so.N and libcublas.so.N of one CUDA
major version N, which only a torch built for that major version brings (its pip dependencies).
With another torch, loading the library would fail with a loader error naming a missing .so;
this check runs before the library is loaded and raises one clear error instead, naming both
versions and the wheel to install. A +cpu build loads into any torch (no check).

The build's CUDA major version is recorded at build time in fastlstm/_build_info.py (setup.py);
a tree without it (a library built some other way) is not checked.
"""

import torch

__all__ = ["CudaMismatchError", "check_torch_cuda", "build_cuda_major"]


class CudaMismatchError(ImportError):
    """This fastlstm build needs a torch built for another CUDA major version."""


def build_cuda_major():
    """"12" / "13": the CUDA major version this fastlstm._C was built for; None: CPU only (or
    not recorded)."""
    try:
        from ._build_info import CUDA_MAJOR
    except ImportError:
        return None
    return CUDA_MAJOR


def _torch_cuda_major():
    cuda = torch.version.cuda
    return cuda.split(".")[0] if cuda else None


def check_torch_cuda():
    need = build_cuda_major()
    have = _torch_cuda_major()
    if need is None or need == have:
        return
    from . import __version__
    base = __version__.split("+")[0]
    torch_desc = (f"torch {torch.__version__}, which is built for CUDA {torch.version.cuda}"
                  if have else f"torch {torch.__version__}, which is not built for CUDA (torch.version.cuda is None)")
    fit = (f"fastlstm-{base}+cu{have}-cp310-abi3-manylinux_2_28_x86_64.whl" if have
           else f"fastlstm-{base}+cpu-cp310-abi3-manylinux_2_28_x86_64.whl")
    raise CudaMismatchError(
        f"this fastlstm (+cu{need}) is built for CUDA {need} and needs a torch built for CUDA "
        f"{need} (torch.version.cuda {need}.x), but it is being imported into {torch_desc}. "
        f"Install the wheel that fits this torch: {fit}"
        f"{' (or the +cpu one, CPU only)' if have else ''}, or a torch built for CUDA {need}. "
        f"See docs/WHEELS.md.")
