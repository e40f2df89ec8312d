"""Question answering with two inputs: a text and a question, each embedded and encoded by
its own fastlstm.LSTM, the two final states concatenated into a softmax over answers.

Synthetic task: the text is 2 to `max_text` random content words (ids 1..8, 0 is
padding); the question is a few filler words (ids 11..15, like "which", "word", "is") and
one question word, FIRST (id 9) or LAST (id 10), at a random place. The answer is the text's
first or last word: a softmax over the 8 content words. Texts and questions have their own
lengths, so each LSTM gets its own `lengths=`. LAST needs `h_n` at each text's own last word
(not in the padding); FIRST needs the text LSTM to carry its first word to the end.

    python examples/question_answering.py
"""

import argparse
import time

import torch
from torch import nn

import fastlstm

CONTENT = 8                 # content words: ids 1..8
FIRST, LAST = 9, 10         # question words
FILLER = (11, 16)           # filler words: ids 11..15
VOCAB = FILLER[1]
ANSWERS = CONTENT           # answer a in 0..7 is content word a + 1
QUESTION_LEN = 5


def make_batch(batch_size, max_text, gen):
    text_len = torch.randint(2, max_text + 1, (batch_size,), generator=gen)
    text = torch.randint(1, CONTENT + 1, (batch_size, max_text), generator=gen)
    text = text.masked_fill(torch.arange(max_text)[None, :] >= text_len[:, None], 0)
    ask_last = torch.rand(batch_size, generator=gen) < 0.5
    question_len = torch.randint(1, QUESTION_LEN + 1, (batch_size,), generator=gen)
    question = torch.randint(*FILLER, (batch_size, QUESTION_LEN), generator=gen)
    slot = torch.randint(0, 2 ** 16, (batch_size,), generator=gen) % question_len
    question[torch.arange(batch_size), slot] = torch.where(ask_last, LAST, FIRST)
    question = question.masked_fill(torch.arange(QUESTION_LEN)[None, :] >= question_len[:, None],
                                    0)
    first = text[:, 0]
    last = text.gather(1, (text_len - 1)[:, None])[:, 0]
    answer = torch.where(ask_last, last, first) - 1
    return (text, text_len), (question, question_len), answer


class QA(nn.Module):
    def __init__(self, embed=16, hidden=64):
        super().__init__()
        self.text_embed = nn.Embedding(VOCAB, embed, padding_idx=0)
        self.question_embed = nn.Embedding(VOCAB, embed, padding_idx=0)
        self.text_lstm = fastlstm.LSTM(embed, hidden, batch_first=True)
        self.question_lstm = fastlstm.LSTM(embed, hidden, batch_first=True)
        self.out = nn.Sequential(nn.Linear(2 * hidden, hidden), nn.ReLU(),
                                 nn.Linear(hidden, ANSWERS))

    def forward(self, text, text_len, question, question_len):
        _, (h_text, _) = self.text_lstm(self.text_embed(text), lengths=text_len)
        _, (h_question, _) = self.question_lstm(self.question_embed(question),
                                                lengths=question_len)
        return self.out(torch.cat([h_text[-1], h_question[-1]], 1))   # logits [B, ANSWERS]


def accuracy(model, data):
    (text, text_len), (question, question_len), answer = data
    with torch.no_grad():
        return (model(text, text_len, question, question_len).argmax(1) == answer) \
            .float().mean().item()


def main(steps=300, batch_size=64, max_text=10, hidden=64, lr=1e-2, seed=0, verbose=True):
    """Trains the model; returns the held-out accuracy, the accuracy of always giving the
    most frequent answer, and the training time."""
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    model = QA(hidden=hidden)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    test = make_batch(1000, max_text, torch.Generator().manual_seed(seed + 1))
    start = time.perf_counter()
    for step in range(1, steps + 1):
        (text, text_len), (question, question_len), answer = make_batch(batch_size, max_text,
                                                                         gen)
        loss = nn.functional.cross_entropy(model(text, text_len, question, question_len),
                                           answer)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if verbose and (step % 100 == 0 or step == steps):
            print(f"step {step:5d}  loss {loss.item():.3f}  "
                  f"held-out accuracy {accuracy(model, test):.3f}")
    counts = torch.bincount(test[2], minlength=ANSWERS)
    result = {"accuracy": accuracy(model, test),
              "majority_baseline": (counts.max() / counts.sum()).item(),
              "seconds": time.perf_counter() - start}
    if verbose:
        print(f"answer accuracy {result['accuracy']:.3f} (always the most frequent answer: "
              f"{result['majority_baseline']:.3f}) after {steps} steps, "
              f"{result['seconds']:.1f} s")
    return result


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads (default 1: as fast for a model this small, and "
                             "OpenMP's waiting threads slow 2+ threads down a lot on a busy "
                             "machine)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    main(steps=args.steps, batch_size=args.batch_size, hidden=args.hidden)
