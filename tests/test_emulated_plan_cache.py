"""Launch plans of the persistent kernels (csrc/cuda/persistent.cuh, plan_persistent), under
the emulator: each computed once per kernel, shape, FASTLSTM_CUDA_PATH / FASTLSTM_CUDA_DSMEM and
device, then cached, the kernels' shared-memory limit set once per kernel and device; and the
dynamic shared memory a plan asks for leaves room for the kernel's static shared memory, as the
runtime requires (dynamic + static <= the device's opt-in per block)."""

import pytest
import torch

from fastlstm import _simt
from helpers import check_parity, make_pair
from test_emulated_persistent import _block_shared_bytes, _data

pytestmark = pytest.mark.cuda_emulated

I = 3
LENGTHS = [5, 0, 3, 5, 1]


@pytest.fixture
def cuda_path(monkeypatch):
    def set_path(path):
        monkeypatch.setenv("FASTLSTM_CUDA_PATH", path)
    return set_path


def _layer(H, proj=0):
    _, fast = make_pair(I, H, torch.float64, bidirectional=True, proj_size=proj)
    x, hx = _data(1, True, H, LENGTHS, torch.float64, 0, proj=proj)
    return fast, x, hx


def _forward(fast, x, hx):
    out, (h, c) = fast(x, hx, lengths=LENGTHS)
    return out.sum() + h.sum() + c.sum()


def _planned(before):
    """The plan queries made since `before` (_simt.plan_query_counts())."""
    now = _simt.plan_query_counts()
    return {name: now[name] - before[name] for name in now}


NONE = dict.fromkeys(_simt.PLAN_QUERIES, 0)


# Each test runs on emulated devices of its own (a shared memory size no other test uses), so
# that plans cached by earlier tests cannot make a first call look cached.
@pytest.mark.parametrize("path,device_lengths,shared", [
    ("persistent", False, _simt.SHARED_BYTES - 8), ("cluster", False, _simt.SHARED_BYTES - 16),
    ("persistent", True, _simt.SHARED_BYTES - 40), ("cluster", True, _simt.SHARED_BYTES - 48)])
def test_second_identical_call_plans_nothing(path, device_lengths, shared, cuda_path):
    """The first forward and backward plan (with device lengths also persistent_fits, before
    each pass's launch); the same layer call again makes no attribute, occupancy or cluster
    query, forward or backward."""
    fast, x, hx = _layer(8)
    cuda_path(path)
    with _simt.emulated_cuda(seed=0, shared_bytes=shared, device_lengths=device_lengths,
                             weak_memory=True):
        before = _simt.plan_query_counts()
        _forward(fast, x, hx).backward()
        first = _planned(before)
        barriers = _simt.cluster_barrier_count()
        before = _simt.plan_query_counts()
        loss = _forward(fast, x, hx)
        forward = _planned(before)
        loss.backward()
        both = _planned(before)
    assert first["occupancy_queries" if path == "persistent" else "cluster_queries"] > 0
    # the float64 forward and backward kernels, once each on this device
    assert first["attribute_sets"] == (2 if path == "persistent" else 4)  # + cluster sizes
    assert forward == NONE
    assert both == NONE
    assert (_simt.cluster_barrier_count() > barriers) == (path == "cluster")


def test_other_dims_or_another_device_plan_again(cuda_path):
    """Another shape on the same device plans again but sets no kernel attribute (set once per
    kernel and device); the same shape on a changed emulated device plans and sets again."""
    cuda_path("persistent")
    device = {"seed": 0, "sms": 5, "shared_bytes": _simt.SHARED_BYTES - 24, "weak_memory": True}
    planned = {}
    for name, H, emulation in [("first", 8, device), ("again", 8, device),
                               ("other dims", 9, device),
                               ("other device", 8, {**device, "shared_bytes": 64 * 1024}),
                               ("fewer sms", 8, {**device, "sms": 4}),
                               ("static shared memory", 8, {**device, "static_shared_bytes": 64}),
                               ("first device again", 8, device)]:
        fast, x, hx = _layer(H)
        with _simt.emulated_cuda(**emulation):
            before = _simt.plan_query_counts()
            _forward(fast, x, hx).backward()
            planned[name] = _planned(before)
    print(planned)
    for name in ("first", "other device", "fewer sms", "static shared memory"):
        assert planned[name]["occupancy_queries"] > 0, name
        assert planned[name]["attribute_sets"] == 2, name  # the forward and backward kernels
    assert planned["other dims"]["occupancy_queries"] > 0
    assert planned["other dims"]["attribute_sets"] == 0
    assert planned["again"] == NONE
    assert planned["first device again"] == NONE


@pytest.mark.parametrize("blocks", [2, 3])
def test_cluster_plan_follows_the_largest_cluster(blocks, cuda_path, monkeypatch):
    """The emulated device's largest cluster and FASTLSTM_CUDA_DSMEM are part of the plan's
    key: changing either plans again."""
    fast, x, hx = _layer(8)
    cuda_path("cluster")
    device = {"seed": 0, "cluster_blocks": blocks, "shared_bytes": _simt.SHARED_BYTES - 32,
              "weak_memory": True}
    planned = {}
    for name, dsmem in [("first", "1"), ("again", "1"), ("no dsmem", "0")]:
        monkeypatch.setenv("FASTLSTM_CUDA_DSMEM", dsmem)
        with _simt.emulated_cuda(**device):
            before = _simt.plan_query_counts()
            _forward(fast, x, hx).backward()
            planned[name] = _planned(before)
    assert planned["first"]["cluster_queries"] > 0
    assert planned["again"] == NONE
    assert planned["no dsmem"]["cluster_queries"] > 0
    assert planned["no dsmem"]["attribute_sets"] == 0


def test_launch_without_room_for_static_shared_memory_is_refused():
    """1024 bytes of dynamic shared memory fit a 1024-byte device, not beside 4 static bytes."""
    x = torch.ones(256)
    with _simt.emulated_cuda(shared_bytes=1024):
        assert torch.ops.fastlstm._simt_selftest("block_sum", x).item() == 256
    with pytest.raises(RuntimeError, match="1024 bytes of dynamic shared memory per block asked "
                                           "for, the emulated device has 1024, of which the "
                                           "kernel's static shared memory takes 4"):
        with _simt.emulated_cuda(shared_bytes=1024, static_shared_bytes=4):
            torch.ops.fastlstm._simt_selftest("block_sum", x)


@pytest.mark.parametrize("path,per_dir", [("persistent", _simt.SMS // 2),
                                          ("cluster", _simt.CLUSTER_BLOCKS)])
@pytest.mark.parametrize("proj", [0, 3])
def test_plan_leaves_room_for_static_shared_memory(path, per_dir, proj, cuda_path):
    """A device whose shared memory holds the backward's weight slices and scratch exactly (the
    forward's, larger, never fit), but not beside the kernels' static shared memory: the backward then
    reads its weights from global memory (two transposed copies per direction with proj_size,
    one without), where a plan against the whole opt-in would launch with more shared memory
    than the device has, and be refused."""
    H, P = 8, proj or 8
    forward, backward = (_block_shared_bytes(H, P, proj, per_dir, backward=b)
                         for b in (False, True))
    assert forward > backward
    shared = backward
    ref, fast = make_pair(I, H, torch.float64, bidirectional=True, proj_size=proj)
    x, hx = _data(1, True, H, LENGTHS, torch.float64, 0, proj=proj)
    cuda_path(path)
    launches = {}
    for static in (0, 8):
        device = {"seed": 1, "shared_bytes": shared, "static_shared_bytes": static,
                  "weak_memory": True}
        with _simt.emulated_cuda(**device):
            check_parity(ref, fast, x, LENGTHS, hx=hx)
            before = _simt.launch_count()
            _forward(fast, x, hx).backward()
            launches[static] = _simt.launch_count() - before
    assert launches[8] - launches[0] == 2 * (2 if proj else 1)
