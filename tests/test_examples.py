"""Each example in examples/ runs (its main(), with small settings) and reaches its outcome;
one runs as a script too. The chunked example's helper is also judged against nn.LSTM."""

import importlib.util
import os
import subprocess
import sys

import pytest
import torch

from helpers import assert_close, make_pair, reference_forward

EXAMPLES = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "examples")


@pytest.fixture(autouse=True)
def one_thread():
    """The examples' models are small: one thread is as fast, and on a shared, busy machine
    OpenMP's spinning threads make two threads many times slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def load(name):
    spec = importlib.util.spec_from_file_location(f"examples_{name}",
                                                  os.path.join(EXAMPLES, f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_tagger_learns():
    result = load("tagger").main(steps=150, verbose=False)
    assert result["accuracy"] > 0.9, result
    assert result["accuracy"] > result["majority_baseline"] + 0.3, result


def test_tagger_needs_the_sentence_end():
    """The labels of the last tokens depend on each sentence's own end: check the data."""
    tagger = load("tagger")
    ids, labels = tagger.make_batch(64, 12, torch.Generator().manual_seed(0))
    lengths = (ids != 0).sum(1)
    for b in range(64):
        n = int(lengths[b])
        assert torch.all(labels[b, n:] == -100)
        prev = int(ids[b, n - 2])
        assert int(labels[b, n - 1]) == int(prev < 0)   # the token after the last one is 0


@pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")  # Keras's own
def test_keras_tagger_learns(monkeypatch):
    """The Keras 3 tagger (Embedding(mask_zero=True) -> Bidirectional(fastlstm.keras.LSTM))
    learns with model.fit, and its LSTMs ran in fastlstm, both directions in one op (no
    fallback to Keras's loop)."""
    os.environ.setdefault("KERAS_BACKEND", "torch")
    pytest.importorskip("keras", reason="needs keras (pip install 'fastlstm[keras]')")
    import warnings

    import fastlstm.keras
    calls = []
    real = fastlstm.keras._fastlstm
    monkeypatch.setattr(fastlstm.keras, "_fastlstm",
                        lambda *a, **k: calls.append((a[1], a[7])) or real(*a, **k))
    with warnings.catch_warnings():
        warnings.simplefilter("error", fastlstm.keras.FallbackWarning)
        result = load("keras_tagger").main(train_size=2048, epochs=2, verbose=False)
    assert result["accuracy"] > 0.9, result
    assert result["accuracy"] > result["majority_baseline"] + 0.3, result
    assert len(calls) >= 2 * 64 and all(bidirectional for _, bidirectional in calls)
    assert any(int(c.min()) < int(c.max()) for c, _ in calls)


def test_question_answering_learns():
    result = load("question_answering").main(steps=200, verbose=False)
    assert result["accuracy"] > 0.9, result
    assert result["majority_baseline"] < 0.2, result


def test_chunked_training_equals_one_pass_and_learns():
    result = load("chunked_training").main(T=120, chunk=25, steps=20, train_T=150,
                                           verbose=False)
    diffs = result["diffs"]
    assert diffs["output"] < 1e-12 and diffs["h_n"] < 1e-12 and diffs["c_n"] < 1e-12, diffs
    assert diffs["grads"] < 1e-9, diffs
    assert result["mse_before"] > 0.5, result
    assert result["mse_after"] < 0.1, result


@pytest.mark.parametrize("chunk", [1, 4, 7, 30])
def test_chunked_matches_packed_nn_lstm(chunk):
    """run_chunked (lengths clamped per chunk, zero lengths passing (h, c) through) equals
    nn.LSTM over the packed whole sequences, with an initial state."""
    example = load("chunked_training")
    ref, fast = make_pair(3, 5, num_layers=2, batch_first=True, seed=1)
    gen = torch.Generator().manual_seed(2)
    T = 23
    lengths = [23, 0, 7, 8, 1, 16]
    x = torch.randn(len(lengths), T, 3, generator=gen, dtype=torch.float64)
    hx = tuple(torch.randn(2, len(lengths), 5, generator=gen, dtype=torch.float64)
               for _ in range(2))
    out, (h, c) = example.run_chunked(fast, x, torch.tensor(lengths), chunk, hx)
    want, want_h, want_c = reference_forward(ref, x, lengths, hx)
    assert_close("output", out, want)
    assert_close("h_n", h, want_h)
    assert_close("c_n", c, want_c)


def test_convert_speed_runs_and_matches():
    result = load("convert_speed").main(batch=8, T=20, hidden=16, reps=1, verbose=False)
    assert result["output_diff"] < 1e-5, result          # float32
    assert result["grad_diff"] < 1e-4, result
    assert result["nn_lstm_s"] > 0 and result["fastlstm_s"] > 0


def test_convert_speed_as_a_script():
    proc = subprocess.run([sys.executable, os.path.join(EXAMPLES, "convert_speed.py"),
                           "--batch", "4", "--T", "10", "--hidden", "8", "--reps", "1",
                           "--threads", "1"],
                          capture_output=True, text=True, timeout=120,
                          env=dict(os.environ, OMP_NUM_THREADS="1",
                                   PYTHONPATH=os.pathsep.join(sys.path)))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "training step, converted to fastlstm" in proc.stdout
    assert "max |logits diff|" in proc.stdout and "threads: 1" in proc.stdout


def test_readme_go_backwards_recipe():
    """README, "For Keras users": reversing each sequence within its length, then a
    unidirectional fastlstm.LSTM, equals nn.LSTM on each sequence flipped (outputs in
    reversed order, as Keras's go_backwards gives them)."""
    from torch.nn.utils.rnn import pack_sequence, pad_packed_sequence

    ref, lstm = make_pair(3, 4, batch_first=True, seed=3)
    T = 6
    lengths = torch.tensor([6, 2, 4, 1])
    x = torch.randn(4, T, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    rev = (lengths[:, None] - 1 - torch.arange(T)) % T
    out, (h_n, _) = lstm(x.gather(1, rev[..., None].expand_as(x)), lengths=lengths)
    flipped = [x[b, :n].flip(0) for b, n in enumerate(lengths.tolist())]
    want, (want_h, _) = ref(pack_sequence(flipped, enforce_sorted=False))
    want, _ = pad_packed_sequence(want, batch_first=True, total_length=T)
    assert_close("output", out, want)
    assert_close("h_n", h_n, want_h)
