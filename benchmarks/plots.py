"""PNG plots of a run: fastlstm's speedup against batch and hidden size, and every contender's
tokens per second against how much the lengths vary. Drawn from the run's results only."""

from collections import defaultdict

from .contenders import BASELINES, CONTENDERS
from .workloads import Workload

COLORS = {"fastlstm": "tab:red", "nn.LSTM padded": "tab:gray", "nn.LSTM packed": "tab:blue",
          "nn.LSTM bucketed": "tab:green"}
MARKERS = "osD^v<>px*"
STYLES = ["-", "--", ":", "-."]
AXIS_LABEL = {"batch": "B", "hidden_size": "H", "input_size": "I", "num_layers": "L",
              "bidirectional": "bi", "max_len": "T", "lengths": "", "dtype": ""}


def _pyplot():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def _series(results, axis):
    """{(mode, other fields): [results]} for the groups of rows that differ only in `axis`,
    keeping the groups with at least two values of it."""
    groups = defaultdict(list)
    for r in results:
        fields = {k: v for k, v in r["workload"].items() if k not in ("name", axis)}
        groups[(r["mode"], tuple(sorted(fields.items())))].append(r)
    return {k: sorted(v, key=lambda r: r["workload"][axis]) for k, v in groups.items()
            if len({r["workload"][axis] for r in v}) > 1}


def _group_labels(keys):
    """Short labels naming only the fields that differ between groups ('' for one group)."""
    dicts = [dict(fields) for _, fields in keys]
    varying = [k for k in dicts[0] if len({d[k] for d in dicts}) > 1] if dicts else []
    return {key: " ".join(f"{AXIS_LABEL.get(k, k)}{d[k]}" for k in varying)
            for key, d in zip(keys, dicts)}


def _context(series, axis):
    """The workload name with the plotted axis as '*', e.g. bi1-H128-B*-T64-uniform-f32, when
    all lines share it."""
    names = set()
    for rows in series.values():
        fields = {k: v for k, v in rows[0]["workload"].items() if k != "name"}
        names.add(Workload(**dict(fields, **{axis: "*"})).name)
    return f" ({names.pop()})" if len(names) == 1 else ""


def _modes(results):
    return list(dict.fromkeys(r["mode"] for r in results))


def speedup(results, path, title):
    """Rows: modes. Columns: speedup against batch, against hidden size."""
    plt = _pyplot()
    modes, axes_names = _modes(results), ("batch", "hidden_size")
    fig, axes = plt.subplots(len(modes), 2, figsize=(11, 3.8 * len(modes)), squeeze=False)
    for row, mode in enumerate(modes):
        for col, axis in enumerate(axes_names):
            ax = axes[row][col]
            series = {k: v for k, v in _series(results, axis).items() if k[0] == mode}
            labels = _group_labels(list(series))
            for i, (key, rows) in enumerate(series.items()):
                xs = [r["workload"][axis] for r in rows]
                for b in BASELINES:
                    ax.plot(xs, [r["speedup"][b] for r in rows], color=COLORS[b],
                            marker=MARKERS[i % len(MARKERS)], linestyle=STYLES[i % len(STYLES)],
                            label=f"vs {b.replace('nn.LSTM ', '')} {labels[key]}".strip())
            ax.axhline(1.0, color="black", linewidth=0.8)
            ax.set_xscale("log", base=2)
            xs = sorted({r["workload"][axis] for rows in series.values() for r in rows})
            ax.set_xticks(xs, [str(x) for x in xs])
            ax.minorticks_off()
            ax.set_xlabel("batch size" if axis == "batch" else "hidden size")
            ax.set_ylabel("fastlstm speedup (x)")
            ax.set_title(f"{mode}{_context(series, axis)}", fontsize=9)
            if series:
                ax.legend(fontsize=7)
            else:
                ax.text(0.5, 0.5, f"no workloads vary only in {axis}", ha="center",
                        transform=ax.transAxes)
    fig.suptitle(title + "\nabove 1: fastlstm faster; 'padded' computes the padding and is "
                 "not correct", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def lengths(results, path, title):
    """One panel per mode: tokens per second of every contender against the coefficient of
    variation of the batch's lengths."""
    plt = _pyplot()
    modes = _modes(results)
    fig, axes = plt.subplots(1, len(modes), figsize=(5.8 * len(modes), 4.4), squeeze=False)
    for col, mode in enumerate(modes):
        ax = axes[0][col]
        series = {k: v for k, v in _series(results, "lengths").items() if k[0] == mode}
        labels = _group_labels(list(series))
        for i, (key, rows) in enumerate(series.items()):
            rows = sorted(rows, key=lambda r: r["length_cv"])
            xs = [r["length_cv"] for r in rows]
            for name in CONTENDERS:
                ax.plot(xs, [r["tokens_per_s"][name] for r in rows], color=COLORS[name],
                        marker=MARKERS[i % len(MARKERS)], linestyle=STYLES[i % len(STYLES)],
                        label=f"{name} {labels[key]}".strip())
            for r in rows:
                ax.annotate(r["workload"]["lengths"],
                            (r["length_cv"], r["tokens_per_s"]["fastlstm"]),
                            textcoords="offset points", xytext=(3, 5), fontsize=7)
        ax.set_yscale("log")
        ax.set_xlabel("length variation: std / mean of the batch's lengths")
        ax.set_ylabel("valid tokens per second")
        ax.set_title(f"{mode}{_context(series, 'lengths')}", fontsize=9)
        if series:
            ax.legend(fontsize=7)
        else:
            ax.text(0.5, 0.5, "no workloads vary only in lengths", ha="center",
                    transform=ax.transAxes)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def draw_all(results, stem, title):
    """Writes stem_speedup.png and stem_lengths.png; returns (paths, note)."""
    try:
        _pyplot()
    except ImportError:
        return [], "matplotlib is not installed: no plots"
    ok = [r for r in results if "error" not in r]
    paths = [stem + "_speedup.png", stem + "_lengths.png"]
    speedup(ok, paths[0], title)
    lengths(ok, paths[1], title)
    return paths, None
