"""Writes a run's tables and plots into README.md between the bench-table markers, so that the
README's figures are always the suite's output files, never hand edits."""

import os
import textwrap

START, END = "<!-- bench-table -->", "<!-- /bench-table -->"
ALT = {"speedup": "fastlstm's speedup against batch and hidden size",
       "lengths": "tokens per second against length variation"}


def block(payload, table, files, readme_dir):
    """The README text for a run. files: {"json": path, "markdown": path, "png": [paths]}."""
    rel = lambda p: os.path.relpath(p, readme_dir).replace(os.sep, "/")  # noqa: E731
    run = payload["run"]
    intro = (
        f"Written by `{run['command']}` (config `{run['config']}`, which "
        f"`make bench` runs) from its output files: `{rel(files['json'])}` (machine, versions, "
        f"every repetition) and `{rel(files['markdown'])}` (also peak memory and per-step "
        "latency). A workload name reads: bi or uni "
        "and the layer count, H hidden size, I input size (when not H), B batch, T cap on the "
        "lengths (each batch is padded to its longest sequence), the length distribution "
        "(`benchmarks/lengths.py`), dtype. The contenders are described in "
        "`benchmarks/contenders.py`; `python -m benchmarks --sweep` runs a larger grid.")
    lines = [textwrap.fill(intro, 96, break_long_words=False, break_on_hyphens=False), "",
             table]
    for png in files["png"]:
        kind = os.path.basename(png).rsplit("_", 1)[-1][:-len(".png")]
        lines += ["", f"![{ALT.get(kind, kind)}]({rel(png)})"]
    return "\n".join(lines)


def update(readme_path, text, markers=(START, END), own_lines=True):
    """Replaces what lies between the two markers (the bench table's by default): with text on
    lines of its own, or (own_lines=False) with text as it is, e.g. in a paragraph whose
    markers are inline comments."""
    start_marker, end_marker = markers
    with open(readme_path) as f:
        content = f.read()
    start, end = content.find(start_marker), content.find(end_marker)
    if start < 0 or end < start:
        raise ValueError(f"{readme_path}: no {start_marker} ... {end_marker} block to replace")
    if own_lines:
        text = "\n" + text + "\n"
    content = content[:start + len(start_marker)] + text + content[end:]
    with open(readme_path, "w") as f:
        f.write(content)
