"""Tests of the benchmark suite itself: the contenders compute what they claim, the length
distributions and configs are what the docs say, the timer and the memory probe measure, and a
tiny end-to-end run writes its outputs and the README block."""

import json
import os

import pytest
import torch

from benchmarks import config, contenders, lengths, memory, readme, report, run, timing
from benchmarks.workloads import Workload


def _outputs_and_grads(step, x_params):
    out, h_n, c_n = step()
    loss = out.square().sum() + h_n.square().sum() + 2 * c_n.square().sum()
    grads = torch.autograd.grad(loss, x_params)
    return [out, h_n, c_n, *grads]


@pytest.mark.parametrize("dist", lengths.DISTRIBUTIONS)
@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("buckets", [1, 3, 4])
def test_correct_contenders_match_packed(dist, bidirectional, buckets):
    """fastlstm and the bucketed workaround give nn.LSTM-packed's outputs, states and
    gradients; padded differs wherever the lengths do."""
    w = Workload(input_size=5, hidden_size=7, num_layers=2, bidirectional=bidirectional,
                 batch=11, max_len=20, lengths=dist, dtype="float64")
    lens = w.draw_lengths(3)
    ref, fast, x = contenders.setup(w, torch.device("cpu"), lens, requires_grad=True)
    steps = contenders.steps(ref, fast, x, lens, backward=False, buckets=buckets)
    expected = _outputs_and_grads(steps["nn.LSTM packed"], [x])
    for name in ("fastlstm", "nn.LSTM bucketed"):
        got = _outputs_and_grads(steps[name], [x])
        for e, g in zip(expected, got):
            torch.testing.assert_close(g, e, atol=1e-10, rtol=1e-10, msg=name)
    padded = _outputs_and_grads(steps["nn.LSTM padded"], [x])
    if dist != "equal" and bool((lens < lens.max()).any()):
        assert not torch.allclose(padded[1], expected[1])
    else:
        torch.testing.assert_close(padded[1], expected[1], atol=1e-10, rtol=1e-10)


def test_training_step_releases_gradients():
    w = Workload(4, 6, 1, True, 5, 9, "uniform")
    lens = w.draw_lengths(0)
    ref, fast, x = contenders.setup(w, torch.device("cpu"), lens, requires_grad=True)
    for name, step in contenders.steps(ref, fast, x, lens, True, buckets=2).items():
        out, _, _ = step()
        assert out.grad_fn is not None, name
        assert x.grad is None, name
        assert all(p.grad is None for p in [*ref.parameters(), *fast.parameters()]), name


@pytest.mark.parametrize("dist", lengths.DISTRIBUTIONS)
def test_lengths_in_range_and_seeded(dist):
    a = lengths.draw(dist, 500, 64, seed=1)
    assert a.dtype == torch.int64 and a.shape == (500,)
    assert int(a.min()) >= 1 and int(a.max()) <= 64
    assert torch.equal(a, lengths.draw(dist, 500, 64, seed=1))
    if dist == "equal":
        assert lengths.variation(a) == 0 and int(a.min()) == 64


def test_sentence_lengths_have_the_documented_mean_and_spread():
    a = lengths.draw("sentence", 200_000, 10_000, seed=0).double()
    assert abs(a.mean().item() - 22.1) < 0.3
    assert abs(lengths.variation(a) - 0.53) < 0.02


def test_lognormal_is_long_tailed():
    a = lengths.draw("lognormal", 20_000, 256, seed=0).double()
    assert abs(a.median().item() - 32) <= 1
    assert (a > 128).float().mean() > 0.02  # a tail well past 4x the median


def test_default_config_covers_every_axis():
    cfg = config.load("default")
    ws = config.workloads(cfg, "cpu")
    assert len(ws) == len(set(ws))
    assert {w.lengths for w in ws} == set(lengths.DISTRIBUTIONS)
    for axis in ("batch", "hidden_size", "num_layers", "bidirectional", "dtype"):
        assert len({getattr(w, axis) for w in ws}) > 1, axis
    # The rows where nn.LSTM's own kernels are strongest (unidirectional, small batches or
    # nearly full lengths) are in the suite.
    names = {w.name for w in ws}
    for B in (8, 16):
        for T in (100, 500):
            assert f"uni1-H128-B{B}-T{T}-uniform-f32" in names
    assert {"uni1-H256-B32-T100-nearfull-f32", "uni1-H512-I256-B32-T100-nearfull-f32"} <= names
    near = lengths.draw("nearfull", 1000, 100, seed=1)
    assert int(near.min()) >= 80 and int(near.max()) == 100
    assert 0.88 < float(near.double().mean()) / 100 < 0.92
    cuda = config.workloads(cfg, "cuda")
    assert {"float16", "bfloat16"} <= {w.dtype for w in cuda}
    assert not {"float16", "bfloat16"} & {w.dtype for w in ws}


def test_config_file_and_errors(tmp_path):
    path = tmp_path / "mine.json"
    path.write_text(json.dumps({"grids": [{"batch": [2, 4], "lengths": ["equal"]}]}))
    cfg = config.load(str(path))
    assert cfg["name"] == "mine" and cfg["reps"] == config.DEFAULT["reps"]
    assert [w.batch for w in config.workloads(cfg, "cpu")] == [2, 4]
    for bad in ({"grids": []}, {"grid": []}, {"grids": [{"batch": 3}]},
                {"grids": [{"lengths": ["zipf"]}]}, {"grids": [{"hidden": [3]}]}):
        path.write_text(json.dumps(bad))
        with pytest.raises(ValueError, match="config"):
            config.load(str(path))


def test_timing_interleaves_and_rotates():
    calls = []
    fns = {name: (lambda n=name: calls.append(n)) for name in "abc"}
    samples = timing.time_interleaved(fns, torch.device("cpu"), warmup=2, reps=3)
    assert {k: len(v) for k, v in samples.items()} == {"a": 3, "b": 3, "c": 3}
    assert calls[:6] == list("abcabc")
    assert calls[6:] == list("abc") + list("bca") + list("cab")


@pytest.mark.skipif(memory.cpu_unsupported() is not None, reason=str(memory.cpu_unsupported()))
def test_cpu_memory_sees_torch_allocations():
    def allocate():
        t = torch.ones(16 * 2 ** 20)  # 64 MiB, touched
        return float(t[-1])
    peaks = memory.cpu_peaks({"big": allocate, "small": lambda: torch.ones(10)})
    assert 60 < peaks["big"] < 80
    assert peaks["small"] < 8


def test_end_to_end_tiny_run(tmp_path):
    cfg = tmp_path / "tiny.json"
    cfg.write_text(json.dumps({"name": "tiny", "reps": 2, "warmup": 1, "buckets": 2,
                               "grids": [{"batch": [3, 6], "hidden_size": [8], "input_size": [4],
                                          "max_len": [6], "lengths": ["uniform", "equal"]}]}))
    payload = run.main(["--config", str(cfg), "--device", "cpu", "--out", str(tmp_path)])
    written = sorted(os.listdir(tmp_path))
    assert any(f.endswith("_tiny_torch" + torch.__version__.split("+")[0] + ".json")
               for f in written), written
    assert len(payload["results"]) == 4 * 2
    for r in payload["results"]:
        assert "error" not in r
        assert set(r["median_ms"]) == {"fastlstm", "nn.LSTM padded", "nn.LSTM packed",
                                       "nn.LSTM bucketed"}
        assert all(len(s) == 2 for s in r["samples_ms"].values())
        assert r["valid_tokens"] <= r["padded_tokens"]
    md = next(f for f in written if f.endswith(".md"))
    table = (tmp_path / md).read_text()
    assert "| bi1-H8-I4-B3-T6-uniform-f32 | forward |" in table
    pngs = [f for f in written if f.endswith(".png")]
    if pngs:
        assert len(pngs) == 2
    saved = json.loads((tmp_path / md.replace(".md", ".json")).read_text())
    assert saved["machine"]["torch"] == torch.__version__ and saved["run"]["config"] == "tiny"
    # The roofline: a measured peak, and every float32 row's time loops timed inside the op
    # (within the op's own time) and set against it.
    peak = payload["machine"]["fma_peak"]
    assert peak["peak_gflops_1thread"] > 0.5 and peak["peak_gflops"] > 0.5
    assert peak["isa"] in ("avx512", "avx2", "baseline")
    for r in payload["results"]:
        roof = r["loop_roofline"]
        assert roof["loop_ms"] > 0 and 0 < roof["fraction"] < 2
    assert "loops % peak" in table and "FMA peak, measured" in table


def test_loop_flops_count_each_loop():
    """Forward loop: 8 H^2 per token per direction (h W_hh^T), the backward's the same
    again; the inference's loop also projects the inputs (8 H I, then 8 H D H above layer 0)."""
    from benchmarks import roofline

    w = Workload(input_size=3, hidden_size=5, num_layers=2, bidirectional=True, batch=2,
                 max_len=4, lengths="equal")
    lens = torch.tensor([4, 2])
    train = 2 * (2 * 6 * 2 * 8 * 25)  # layers x directions x tokens x 8 H^2, both loops
    assert roofline.loop_flops(w, lens, backward=True) == train
    infer = 2 * 6 * (8 * 25 + 8 * 5 * 3) + 2 * 6 * (8 * 25 + 8 * 5 * 10)
    assert roofline.loop_flops(w, lens, backward=False) == infer


@pytest.mark.parametrize("grad", [False, True])
def test_loop_seconds_time_the_loops_inside_each_call(grad):
    import time

    import fastlstm

    model = fastlstm.LSTM(16, 32, bidirectional=True)
    x = torch.randn(50, 4, 16, requires_grad=grad)
    lengths = torch.tensor([50, 40, 10, 3])
    for _ in range(3):
        before, t0 = torch.ops.fastlstm._cpu_loop_seconds(), time.perf_counter()
        with torch.set_grad_enabled(grad):
            out = model(x, lengths=lengths)[0]
            if grad:
                out.sum().backward()
        wall = time.perf_counter() - t0
        loops = torch.ops.fastlstm._cpu_loop_seconds() - before
        assert 0 < loops <= wall


def test_fma_peak_calibration_measures_and_checks_its_arguments():
    peak = torch.ops.fastlstm._cpu_fma_peak_gflops
    one = max(peak(1, 0.05) for _ in range(2))
    assert one > 0.5  # any x86-64 core does more than 0.5 GFLOP/s in float32
    with pytest.raises(ValueError, match="seconds must be in \\(0, 10\\], got 0"):
        peak(1, 0.0)
    with pytest.raises(ValueError, match="threads must be >= 1, got 0"):
        peak(0, 0.1)


def test_step_gemm_benchmark_times_each_dtype_both_ways(capsys):
    """python -m benchmarks.step_gemm: one row per dtype, pass, H and rows, both kernels timed
    (own and MKL's), the bfloat16 kernel named; bad arguments named in the error."""
    from benchmarks import step_gemm
    step_gemm.main(["--rows", "3", "--hidden", "16", "--seconds", "0.005",
                    "--dtype", "float32", "bfloat16", "float16"])
    out = capsys.readouterr().out
    assert f"bfloat16 kernel: {torch.ops.fastlstm._cpu_bf16_kernel()}" in out
    rows = [line.split("|")[1:-1] for line in out.splitlines() if line.startswith("| ")][1:]
    assert [(r[0].strip(), r[1].strip()) for r in rows] == [
        (d, p) for d in ("float32", "bfloat16", "float16") for p in ("forward", "backward")]
    for r in rows:
        own, blas = float(r[4]), float(r[6])
        assert own > 0 and blas > 0, r
    with pytest.raises(ValueError, match="dtype must be 'float32', 'bfloat16' or 'float16', "
                                         "got 'float64'"):
        torch.ops.fastlstm._cpu_step_gemm_gflops(2, 8, 4, True, "own", 0.01, "float64")


def test_readme_block_is_replaced_and_nothing_else(tmp_path):
    path = tmp_path / "README.md"
    path.write_text(f"intro\n{readme.START}\nold table\n{readme.END}\noutro\n")
    readme.update(str(path), "new table")
    assert path.read_text() == f"intro\n{readme.START}\nnew table\n{readme.END}\noutro\n"
    path.write_text("no markers\n")
    with pytest.raises(ValueError, match="bench-table"):
        readme.update(str(path), "x")


def test_per_step_latency_is_the_difference_over_the_steps():
    def row(max_len, batch_max_len, ms, mode="forward"):
        w = Workload(8, 16, 1, False, 4, max_len, "equal")
        return {"workload": w.as_dict(), "mode": mode, "batch_max_len": batch_max_len,
                "median_ms": {name: ms * k for k, name in enumerate(contenders.CONTENDERS, 1)}}
    rows = [row(100, 100, 2.0), row(1000, 1000, 11.0), row(100, 100, 1.0, "forward+backward"),
            {"workload": Workload(8, 16, 1, False, 4, 50, "equal").as_dict(), "mode": "forward",
             "error": "RuntimeError: x"}]
    (p,) = report.per_step(rows)
    assert p["workload"] == "uni1-H16-I8-B4-T*-equal-f32" and p["steps"] == 900
    assert p["per_step_us"]["fastlstm"] == pytest.approx(10.0)      # (11 - 2) ms / 900
    assert p["per_step_us"]["nn.LSTM padded"] == pytest.approx(20.0)
    assert "| uni1-H16-I8-B4-T*-equal-f32 | forward | 1000-100 | 10.00 |" in \
        "\n".join(report._per_step_lines([p]))


def test_config_tf32_is_checked_and_applied(tmp_path):
    path = tmp_path / "t.json"
    path.write_text(json.dumps({"tf32": "off", "grids": [{"batch": [2]}]}))
    with pytest.raises(ValueError, match="tf32"):
        config.load(str(path))
    old = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    try:
        run.set_tf32(False)
        assert not torch.backends.cuda.matmul.allow_tf32 and not torch.backends.cudnn.allow_tf32
        run.set_tf32(None)  # leaves them
        assert not torch.backends.cudnn.allow_tf32
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = old


def test_gpu_session_config_has_the_issue_axes():
    cfg = config.load(os.path.join(os.path.dirname(__file__), "configs", "gpu_session.json"))
    ws = config.workloads(cfg, "cuda")
    assert cfg["tf32"] is False and set(cfg["modes"]) == set(config.MODES)
    assert {w.batch for w in ws} == {1, 16, 64} and {w.max_len for w in ws} == {100, 1000}
    assert {w.hidden_size for w in ws} == {256, 512, 1024}
    assert {w.dtype for w in ws} == {"float32", "bfloat16"}
    assert {w.lengths for w in ws} == {"uniform", "equal"}
    assert {w.bidirectional for w in ws} == {False, True}
    # every workload has its T=100 / T=1000 partner, for the per-step latency
    keys = {(w.hidden_size, w.batch, w.bidirectional, w.lengths, w.dtype, w.max_len) for w in ws}
    assert all(k[:-1] + (1100 - k[-1],) in keys for k in keys)
    # the A/B pairs the GPU run measures: DSMEM against global memory, stage against none
    assert {"persistent", "persistent-unstaged", "cluster", "cluster-global"} <= {
        w.cuda_path for w in ws}


@pytest.mark.parametrize("path,env", [
    ("persistent", {"FASTLSTM_CUDA_PATH": "persistent"}),
    ("cluster-global", {"FASTLSTM_CUDA_PATH": "cluster", "FASTLSTM_CUDA_DSMEM": "0"}),
    ("persistent-unstaged", {"FASTLSTM_CUDA_PATH": "persistent", "FASTLSTM_CUDA_STAGE": "0"}),
])
def test_cuda_path_sets_its_switches_and_restores_them(path, env, monkeypatch):
    switches = ("FASTLSTM_CUDA_PATH", "FASTLSTM_CUDA_DSMEM", "FASTLSTM_CUDA_STAGE")
    for k in switches:
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("FASTLSTM_CUDA_STAGE", "32")
    with run.cuda_path(path):
        assert {k: os.environ.get(k) for k in switches} == {k: env.get(k) for k in switches}
    assert os.environ.get("FASTLSTM_CUDA_STAGE") == "32"
    assert os.environ.get("FASTLSTM_CUDA_PATH") is None


def test_incremental_run_stops_on_sigterm_and_keeps_the_jobs_done(tmp_path, monkeypatch):
    """--incremental: the JSON after every job; SIGTERM (a `timeout` cap) ends the run after the
    job in progress, and every output is written for the jobs done, marked partial."""
    import signal
    cfg = tmp_path / "t.json"
    cfg.write_text(json.dumps({"name": "t", "reps": 1, "warmup": 0, "buckets": 2,
                               "modes": ["forward"], "grids": [{"batch": [2], "hidden_size": [4],
                               "input_size": [3], "max_len": [3, 5, 7, 9]}]}))
    real, seen = run.measure, []

    def measure(*a, **k):
        row = real(*a, **k)
        seen.append(row)
        if len(seen) == 2:
            os.kill(os.getpid(), signal.SIGTERM)
        return row
    monkeypatch.setattr(run, "measure", measure)
    before = signal.getsignal(signal.SIGTERM)
    payload = run.main(["--config", str(cfg), "--device", "cpu", "--out", str(tmp_path / "out"),
                        "--incremental", "--no-memory"])
    assert signal.getsignal(signal.SIGTERM) == before
    assert len(payload["results"]) == 2 and payload["run"]["jobs"] == 4
    assert payload["run"]["stopped"].startswith("stopped by SIGTERM after 2 of 4 jobs")
    written = os.listdir(tmp_path / "out")
    saved = json.loads((tmp_path / "out" / next(f for f in written if f.endswith(".json")))
                       .read_text())
    assert len(saved["results"]) == 2 and len(saved["per_step"]) == 1
    md = (tmp_path / "out" / next(f for f in written if f.endswith(".md"))).read_text()
    assert "Partial run" in md and not any(f.endswith(".tmp") for f in written)


def test_oversubscribed_times_every_contender_under_each_load(tmp_path, capsys):
    """`python -m benchmarks.oversubscribed` (one shrunk row): every contender timed idle and
    beside one busy process, in both modes, its JSON and table written, the README block
    generated from them."""
    from benchmarks import oversubscribed

    payload = oversubscribed.main(["--busy", "1", "--reps", "2", "--shape", "4", "3", "2", "5",
                                   "--out", str(tmp_path)])
    assert payload["run"]["loads"] == [0, 1]
    assert [(r["row"], r["mode"]) for r in payload["results"]] == [
        ("uni B=3 H=5", "inference"), ("uni B=3 H=5", "train")]
    for r in payload["results"]:
        for load in ("0", "1"):
            assert set(r["samples_ms"][load]) == set(oversubscribed.CONTENDERS)
            assert all(len(v) == 2 and min(v) > 0 for v in r["samples_ms"][load].values())
    written = sorted(os.listdir(tmp_path))
    version = torch.__version__.split("+")[0]
    assert any(f.endswith(f"_oversubscribed_torch{version}.json") for f in written)
    table = (tmp_path / written[-1]).read_text()
    assert "| uni B=3 H=5 | train |" in table and "1 busy: fastlstm ms" in table
    block = oversubscribed.readme_block(payload, str(tmp_path / written[-1]), str(tmp_path))
    assert block.count("\n| uni B=3 H=5 |") == 1 and "| training (idle, 1 busy) |" in block
    assert len(oversubscribed.grid()) == 8  # uni/bi x B 8, 32 x H 128, 256


@pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")  # Keras's own
def test_keras_row_runs_and_writes_its_own_table(tmp_path, monkeypatch, capsys):
    """`python -m benchmarks --keras` (shrunk): both contenders timed in each of the 4 jobs, the
    two models agreeing before timing, and its own JSON and table written."""
    from benchmarks import keras_tagger

    missing = keras_tagger.keras_missing()      # (sets KERAS_BACKEND=torch unless set)
    if missing:
        pytest.skip(f"needs keras on the torch backend: {missing}")
    monkeypatch.setattr(keras_tagger, "SHAPE", {"batch": 4, "steps": 40, "units": 5, "embed": 6,
                                                "vocab": 30, "tags": 3})
    payload = run.main(["--keras", "--reps", "2", "--warmup", "0", "--out", str(tmp_path)])
    rows = payload["results"]
    assert [(r["mode"], r["masked"]) for r in rows] == keras_tagger.JOBS
    for r in rows:
        assert set(r["median_ms"]) == set(keras_tagger.CONTENDERS)
        assert all(len(s) == 2 and min(s) > 0 for s in r["samples_ms"].values())
        assert r["max_prediction_diff"] < 1e-5
        assert (r["valid_tokens"] < r["padded_tokens"]) == r["masked"]
    written = sorted(os.listdir(tmp_path))
    stem = next(f for f in written if f.endswith(".json"))[:-len(".json")]
    assert "_keras_torch" in stem and stem + ".md" in written
    table = (tmp_path / (stem + ".md")).read_text()
    assert "| train | yes |" in table and "| inference | no |" in table
    assert json.loads((tmp_path / (stem + ".json")).read_text())["machine"]["keras"]
    assert "fastlstm.keras" in capsys.readouterr().out


def test_keras_readme_figure_continues_its_paragraph_and_nothing_else_changes(tmp_path):
    """`--keras --update-readme`: the figure goes between the inline keras-figure comments,
    continuing the line of the start comment, wrapped at 100 columns; twice gives the same."""
    from benchmarks import keras_tagger
    results = [{"mode": mode, "masked": masked, "speedup": 10.0 + k,
                "median_ms": {"fastlstm.keras": 20.0, "fastlstm.keras.LSTM": 25.0,
                              "keras.layers.LSTM": 250.0}}
               for k, (mode, masked) in enumerate(keras_tagger.JOBS)]
    payload = {"machine": {"device": "cpu", "cpu": "Intel(R) Xeon(R) Processor", "cpu_threads": 2,
                           "keras": "3.15.1", "load_average": 1.25},
               "run": {"shape": keras_tagger.SHAPE}, "results": results}
    figure = keras_tagger.readme_figure(payload, str(tmp_path / "results" / "x_keras.md"),
                                        str(tmp_path))
    assert figure.startswith("Masked tagger (B=32, T=64, H=128; Intel Xeon, 2 threads, load 1.2)")
    assert "train step 20.0 ms (25.0 ms one op per direction) against Keras's 250 ms (10.0x), " \
        "inference 11.0x (`results/x_keras.md`)." in figure
    path = tmp_path / "README.md"
    before = ("# title\n\nA paragraph that ends with the figure. "
              f"{keras_tagger.README_START}old\nfigure{keras_tagger.README_END}\n\nafter\n")
    path.write_text(before)
    for _ in range(2):
        keras_tagger.write_readme_figure(str(path), figure)
        text = path.read_text()
        head, rest = text.split(keras_tagger.README_START)
        inside, tail = rest.split(keras_tagger.README_END)
        assert head == "# title\n\nA paragraph that ends with the figure. " and \
            tail == "\n\nafter\n"
        assert " ".join(inside.split()) == figure
        assert all(len(line) <= 100 for line in text.splitlines()[:-3])
