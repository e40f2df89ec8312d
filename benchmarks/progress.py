"""A progress bar on stderr: tqdm when installed (requirements-dev.txt has it), else a plain one,
so that the suite also runs where only torch is installed (the GPU machine)."""

import sys
import time

try:
    from tqdm import tqdm
except ImportError:  # pragma: no cover - depends on the environment
    tqdm = None


class _PlainBar:
    def __init__(self, total, desc):
        self.total, self.desc, self.n, self.t0 = total, desc, 0, time.monotonic()
        self._draw()

    def _draw(self):
        width = 30
        filled = width * self.n // max(1, self.total)
        elapsed = time.monotonic() - self.t0
        sys.stderr.write(f"\r{self.desc} [{'#' * filled}{'.' * (width - filled)}] "
                         f"{self.n}/{self.total} {elapsed:.0f}s")
        sys.stderr.flush()

    def update(self, n=1):
        self.n += n
        self._draw()

    def write(self, line):
        sys.stderr.write("\r" + line + "\n")
        self._draw()

    def close(self):
        sys.stderr.write("\n")


class Progress:
    """update() after each job; write() prints a line above the bar."""

    def __init__(self, total, desc="bench"):
        if tqdm is not None:
            self._bar = tqdm(total=total, desc=desc, file=sys.stderr, dynamic_ncols=True)
            self._write = lambda line: tqdm.write(line, file=sys.stderr)
        else:
            self._bar = _PlainBar(total, desc)
            self._write = self._bar.write

    def update(self, n=1):
        self._bar.update(n)

    def write(self, line):
        self._write(line)

    def close(self):
        self._bar.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
