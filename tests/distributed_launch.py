"""Launches the worker processes of the distributed tests (test_ddp.py, test_fsdp.py): each
test file doubles as its worker script, run as `python FILE RANK PORT OUT_DIR` per rank, with
gloo on the loopback interface. The workers write their results under OUT_DIR. Also the
global batch both tests train on (step_batch)."""

import os
import socket
import subprocess
import sys


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_workers(script: str, out_dir: str, world: int, label: str, timeout: float = 150) -> None:
    """Runs `world` ranks of `script` to completion; raises AssertionError with every rank's
    log when one fails or times out. A port taken between choosing and binding is retried."""
    # The workers import what this process imports (the same fastlstm build).
    env = dict(os.environ, OMP_NUM_THREADS="1",
               PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
    if "GLOO_SOCKET_IFNAME" not in env and os.path.exists("/sys/class/net/lo"):
        env["GLOO_SOCKET_IFNAME"] = "lo"     # keep gloo on the loopback interface
    for attempt in range(3):
        port = free_port()
        procs = [subprocess.Popen([sys.executable, os.path.abspath(script), str(rank),
                                   str(port), out_dir], env=env, stdout=subprocess.PIPE,
                                  stderr=subprocess.STDOUT, text=True)
                 for rank in range(world)]
        logs = []
        for p in procs:
            try:
                logs.append(p.communicate(timeout=timeout)[0])
            except subprocess.TimeoutExpired:
                for q in procs:
                    q.kill()
                raise AssertionError(f"{label} workers timed out after {timeout:.0f} s")
        if all(p.returncode == 0 for p in procs):
            return
        text = "\n".join(f"--- rank {r} (exit {p.returncode}):\n{log}"
                         for r, (p, log) in enumerate(zip(procs, logs)))
        if "address already in use" not in text.lower() or attempt == 2:
            raise AssertionError(f"{label} workers failed:\n" + text)


def step_batch(step: int, B: int, T: int, I: int):
    """The global batch of one step, float64: inputs [B, T, I], lengths [B] (a 0 and a full
    one among them), targets [B, T]."""
    import torch
    gen = torch.Generator().manual_seed(100 + step)
    x = torch.randn(B, T, I, generator=gen, dtype=torch.float64)
    lengths = torch.randint(1, T + 1, (B,), generator=gen)
    lengths[step % B] = 0
    lengths[(step + 3) % B] = T
    target = torch.randn(B, T, generator=gen, dtype=torch.float64)
    return x, lengths, target


def init_gloo(rank: int, port: int, world: int) -> None:
    """In a worker: one thread (two ranks share this machine's cores) and the gloo group."""
    from datetime import timedelta

    import torch
    torch.set_num_threads(1)
    torch.distributed.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}",
                                         rank=rank, world_size=world,
                                         timeout=timedelta(seconds=60))
