"""A Keras 3 tagger on the torch backend: Embedding(mask_zero=True) -> Bidirectional(
fastlstm.keras.LSTM) -> Dense, trained with model.fit.

The task is examples/tagger.py's: sentences of 2 to `max_len` tokens (ids 1..19, 0 is padding,
which `mask_zero=True` turns into Keras's mask). A token's label is 1 when the token before it is
smaller than the token after it (outside the sentence counts as 0): each label needs the left and
the right context, and the last token's right context is the sentence's own end.

The model is plain Keras; only the LSTM class changes (`keras.layers.LSTM` ->
`fastlstm.keras.LSTM`), and the wrapper (`keras.layers.Bidirectional` ->
`fastlstm.keras.Bidirectional`, which runs both directions in one fastlstm op;
`keras.layers.Bidirectional` works too, one op per direction). The mask from the embedding gives
fastlstm each sentence's length, so the LSTM spends no compute on the padding, and the backward
direction starts at each sentence's end. The loss ignores the padding through the same mask.

    python examples/keras_tagger.py      # trains in well under a minute on a CPU (needs keras)
"""

import os

os.environ.setdefault("KERAS_BACKEND", "torch")  # before keras is first imported

import argparse  # noqa: E402
import time  # noqa: E402

import keras  # noqa: E402
import numpy as np  # noqa: E402

import fastlstm.keras  # noqa: E402

VOCAB = 20   # ids 1..19 are tokens, 0 is padding


def make_data(n, max_len, rng):
    """(ids [n, max_len] int32, 0-padded; labels [n, max_len], 0 at the padding)."""
    lengths = rng.integers(2, max_len + 1, n)
    valid = np.arange(max_len)[None, :] < lengths[:, None]
    ids = np.where(valid, rng.integers(1, VOCAB, (n, max_len)), 0).astype("int32")
    zero = np.zeros((n, 1), dtype=ids.dtype)
    before = np.concatenate([zero, ids[:, :-1]], 1)   # 0 before the first token
    after = np.concatenate([ids[:, 1:], zero], 1)     # 0 after the last one (the padding)
    labels = ((before < after) & valid).astype("int32")
    return ids, labels


def build_model(max_len, embed=16, hidden=32, tags=2):
    return keras.Sequential([
        keras.Input((max_len,), dtype="int32"),
        keras.layers.Embedding(VOCAB, embed, mask_zero=True),
        fastlstm.keras.Bidirectional(fastlstm.keras.LSTM(hidden, return_sequences=True)),
        keras.layers.Dense(tags),
    ])


def token_accuracy(model, ids, labels):
    pred = model.predict(ids, batch_size=256, verbose=0).argmax(-1)
    valid = ids != 0
    return float((pred[valid] == labels[valid]).mean())


def main(train_size=4096, epochs=3, batch_size=32, max_len=20, hidden=32, lr=1e-2, seed=0,
         verbose=True):
    """Trains the tagger with model.fit; returns the held-out token accuracy, the accuracy of
    always answering the majority tag, and the training time."""
    fastlstm.keras.require_torch_backend()
    keras.utils.set_random_seed(seed)
    rng = np.random.default_rng(seed)
    ids, labels = make_data(train_size, max_len, rng)
    test_ids, test_labels = make_data(512, max_len, np.random.default_rng(seed + 1))
    model = build_model(max_len, hidden=hidden)
    model.compile(optimizer=keras.optimizers.Adam(lr),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    start = time.perf_counter()
    model.fit(ids, labels, batch_size=batch_size, epochs=epochs, verbose=2 if verbose else 0)
    seconds = time.perf_counter() - start
    ones = test_labels[test_ids != 0].mean()
    result = {"accuracy": token_accuracy(model, test_ids, test_labels),
              "majority_baseline": float(max(ones, 1 - ones)), "seconds": seconds}
    if verbose:
        print(f"token accuracy {result['accuracy']:.3f} (always the majority tag: "
              f"{result['majority_baseline']:.3f}) after {epochs} epochs, {seconds:.1f} s")
    return result


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--train-size", type=int, default=4096)
    parser.add_argument("--hidden", type=int, default=32)
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads (default 1: as fast for a model this small)")
    args = parser.parse_args()
    import torch
    torch.set_num_threads(args.threads)
    main(train_size=args.train_size, epochs=args.epochs, hidden=args.hidden)
