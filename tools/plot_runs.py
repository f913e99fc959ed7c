#!/usr/bin/python3
"""Plots trainer run folders (metrics.jsonl, results.json) as PNG figures.

Usage: /usr/bin/python3 tools/plot_runs.py RUN [RUN ...] --out DIR

Writes into DIR (created if needed), each figure only where its data exist:
  training_curves.png     train loss, train accuracy and val accuracy per epoch (metrics.jsonl)
  accuracy_by_subset.png  accuracy per subset and the average over subsets, one bar per run
  reliability.png         reliability diagram of all images pooled, one panel per run
  accuracy_coverage.png   accuracy against coverage, ranked by predictive entropy and, for the
                          Bayesian heads, by mutual information
Needs Debian's python3-matplotlib and python3-numpy. Exit status 0 when at least one figure was
written, 1 on an error (a missing run folder, malformed JSON, an unexpected schema) or when
nothing could be plotted. See tools/README.md.
"""
import argparse
import json
import math
import os
import struct
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.lines  # noqa: E402  (after the backend is chosen)
import matplotlib.patches  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import matplotlib.ticker  # noqa: E402
import numpy as np  # noqa: E402

PROG = "plot_runs"
FIGURES = ("training_curves.png", "accuracy_by_subset.png", "reliability.png", "accuracy_coverage.png")


class PlotError(Exception):
    """A fault in the input that stops the script (exit status 1)."""


def warn(message):
    print(f"{PROG}: warning: {message}", file=sys.stderr)


# ---------------------------------------------------------------- reading


def field(obj, path, keys, kind=None):
    """obj[keys[0]][keys[1]]...; PlotError naming the file and the key path when absent or of
    the wrong type (kind: a type or tuple of types)."""
    cur = obj
    for i, key in enumerate(keys):
        if isinstance(key, int):
            ok = isinstance(cur, list) and -len(cur) <= key < len(cur)
        else:
            ok = isinstance(cur, dict) and key in cur
        if not ok:
            where = ".".join(str(k) for k in keys[: i + 1])
            raise PlotError(f"{path}: missing '{where}' (not a results.json / metrics.jsonl the trainer writes?)")
        cur = cur[key]
    if kind is not None and not isinstance(cur, kind):
        where = ".".join(str(k) for k in keys)
        raise PlotError(f"{path}: '{where}' has type {type(cur).__name__}, expected {_kind_name(kind)}")
    return cur


def _kind_name(kind):
    kinds = kind if isinstance(kind, tuple) else (kind,)
    names = {dict: "object", list: "array", str: "string", int: "number", float: "number", bool: "bool",
             type(None): "null"}
    return " or ".join(dict.fromkeys(names.get(k, k.__name__) for k in kinds))


NUMBER = (int, float)
NUMBER_OR_NULL = (int, float, type(None))


def number(value):
    """A JSON number or null (the trainer's NaN) as a float."""
    return float("nan") if value is None else float(value)


def read_results(path):
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except json.JSONDecodeError as e:
        raise PlotError(f"{path}: malformed JSON: {e}") from None
    except (OSError, UnicodeDecodeError) as e:
        raise PlotError(f"{path}: cannot read: {e}") from None
    if not isinstance(data, dict):
        raise PlotError(f"{path}: expected a JSON object at the top level")
    return data


def read_metrics(path):
    """The records of metrics.jsonl, one per epoch (a repeated epoch, as after a resume, keeps its
    last record). A last line without its newline that does not parse is a line the trainer is
    still writing: skipped with a warning."""
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except (OSError, UnicodeDecodeError) as e:
        raise PlotError(f"{path}: cannot read: {e}") from None
    lines = text.split("\n")
    by_epoch = {}
    for number_, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as e:
            if number_ == len(lines):  # no newline after it: possibly half written
                warn(f"{path} line {number_}: incomplete last line skipped (is the run still writing?)")
                continue
            raise PlotError(f"{path} line {number_}: malformed JSON: {e}") from None
        if not isinstance(record, dict):
            raise PlotError(f"{path} line {number_}: expected a JSON object")
        where = f"{path} line {number_}"
        epoch = field(record, where, ["epoch"], int)
        field(record, where, ["train_loss"], NUMBER)
        field(record, where, ["train_accuracy"], NUMBER)
        if "val" in record:
            field(record, where, ["val", "accuracy"], NUMBER)
        by_epoch[epoch] = record
    return [by_epoch[e] for e in sorted(by_epoch)]


def checkpoint_model(path):
    """The model name from checkpoint.safetensors' header metadata, or None (best effort: the
    label of a run that has no results.json yet)."""
    try:
        with open(path, "rb") as f:
            head = f.read(8)
            if len(head) != 8:
                return None
            (size,) = struct.unpack("<Q", head)
            if size > (64 << 20):
                return None
            meta = json.loads(f.read(size)).get("__metadata__", {})
        model = meta.get("model")
        return model if isinstance(model, str) and model else None
    except (OSError, ValueError, AttributeError, struct.error):
        return None


class Run:
    def __init__(self, folder):
        self.folder = folder
        self.results = None  # dict from results.json
        self.epochs = None  # list of metrics.jsonl records
        self.model = None
        self.label = folder
        self.color = None

    @property
    def evaluation(self):
        return self.results["evaluation"]

    def bayesian(self):
        return "bayes" in self.evaluation["pooled"]


def load_run(folder):
    if not os.path.exists(folder):
        raise PlotError(f"{folder}: no such run folder")
    if not os.path.isdir(folder):
        raise PlotError(f"{folder}: not a folder (expected a run folder holding results.json, metrics.jsonl)")
    run = Run(folder)
    results_path = os.path.join(folder, "results.json")
    metrics_path = os.path.join(folder, "metrics.jsonl")
    if os.path.exists(results_path):
        run.results = read_results(results_path)
        validate_results(run.results, results_path)
        run.model = run.results.get("model") if isinstance(run.results.get("model"), str) else None
    if os.path.exists(metrics_path):
        run.epochs = read_metrics(metrics_path)
        if not run.epochs:
            warn(f"{metrics_path}: no epoch recorded yet")
    missing = [p for p, there in ((results_path, run.results is not None), (metrics_path, run.epochs is not None))
               if not there]
    if len(missing) == 2:
        warn(f"{folder}: neither results.json nor metrics.jsonl: nothing to plot for this run")
    elif missing:
        what = ("the subset, reliability and coverage figures" if missing[0] == results_path
                else "the training curves")
        warn(f"{missing[0]} not found: this run is left out of {what}")
    if run.model is None:
        run.model = checkpoint_model(os.path.join(folder, "checkpoint.safetensors"))
    return run


def validate_set(metrics, path, prefix):
    """Checks the fields the figures read from one SetMetrics::to_json object."""
    field(metrics, path, prefix + ["accuracy"], NUMBER)
    field(metrics, path, prefix + ["ece"], NUMBER)
    field(metrics, path, prefix + ["images"], int)
    bins = field(metrics, path, prefix + ["calibration_bins"], list)
    for i in range(len(bins)):
        for key in ("lo", "hi", "mean_confidence", "accuracy"):
            field(metrics, path, prefix + ["calibration_bins", i, key], NUMBER)
        field(metrics, path, prefix + ["calibration_bins", i, "count"], int)
    curves = [["selective_by_entropy"]]
    if "bayes" in field(metrics, path, prefix, dict):
        curves.append(["bayes", "selective_by_mutual_information"])
    for curve in curves:
        field(metrics, path, prefix + curve + ["area"], NUMBER)
        points = field(metrics, path, prefix + curve + ["points"], list)
        for i in range(len(points)):
            field(metrics, path, prefix + curve + ["points", i, "coverage"], NUMBER)
            field(metrics, path, prefix + curve + ["points", i, "accuracy"], NUMBER_OR_NULL)


def validate_results(results, path):
    subsets = field(results, path, ["evaluation", "subsets"], dict)
    for name in subsets:
        field(results, path, ["evaluation", "subsets", name], dict)
        validate_set(results, path, ["evaluation", "subsets", name])
    validate_set(results, path, ["evaluation", "pooled"])
    field(results, path, ["evaluation", "average_over_subsets", "accuracy"], NUMBER)


def assign_labels(runs):
    """'folder (model)'; folders of the same name get their parent folders prepended until the
    labels differ. One colour per run, the same in every figure."""
    parts = [os.path.normpath(os.path.abspath(r.folder)).split(os.sep) for r in runs]
    depth = {i: 1 for i in range(len(runs))}
    for _ in range(8):
        names = {i: "/".join(p[-depth[i]:]) for i, p in enumerate(parts)}
        clashes = [i for i in names if list(names.values()).count(names[i]) > 1 and depth[i] < len(parts[i])]
        if not clashes:
            break
        for i in clashes:
            depth[i] += 1
    colors = plt.get_cmap("tab10").colors
    for i, run in enumerate(runs):
        name = "/".join(parts[i][-depth[i]:])
        run.label = f"{name} ({run.model})" if run.model else name
        run.color = colors[i % len(colors)]


# ---------------------------------------------------------------- figures


def finish(fig, handles, labels, ncol, path, fontsize=10):
    """Puts the legend under the axes, grows the figure by the legend's height (the axes keep
    theirs), lays it out and writes the PNG."""
    ncol = max(1, min(ncol, len(handles)))
    rows = math.ceil(len(handles) / ncol) if handles else 0
    legend_inches = 0.12 + 0.24 * rows * fontsize / 10
    height = fig.get_figheight() + legend_inches
    fig.set_figheight(height)
    if handles:
        fig.legend(handles, labels, loc="lower center", ncol=ncol, frameon=False, fontsize=fontsize)
    fig.tight_layout(rect=(0, legend_inches / height, 1, 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_training_curves(runs, path):
    runs = [r for r in runs if r.epochs]
    if not runs:
        return False
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(13, 4.6))
    losses = []
    any_val = False
    for run in runs:
        epochs = [r["epoch"] for r in run.epochs]
        loss = [number(r["train_loss"]) for r in run.epochs]
        losses += [v for v in loss if math.isfinite(v) and v > 0]
        ax_loss.plot(epochs, loss, marker="o", color=run.color, label=run.label)
        ax_acc.plot(epochs, [number(r["train_accuracy"]) for r in run.epochs], marker="o", color=run.color,
                    label=f"{run.label}: train")
        val = [(r["epoch"], number(r["val"]["accuracy"])) for r in run.epochs if "val" in r]
        if val:
            any_val = True
            ax_acc.plot(*zip(*val), marker="s", linestyle="--", color=run.color, label=f"{run.label}: val")
    # The Bayesian heads' loss includes the KL term: a log axis when the runs differ by far.
    if losses and max(losses) / min(losses) > 30:
        ax_loss.set_yscale("log")
    ax_loss.set_title("Training loss (cross-entropy, + weighted KL for the Bayesian heads)", fontsize=11)
    ax_loss.set_ylabel("train loss")
    ax_acc.set_title("Accuracy" + (" (solid: train, dashed: validation, all images)" if any_val else " (train)"),
                     fontsize=11)
    ax_acc.set_ylabel("accuracy")
    ax_acc.set_ylim(-0.02, 1.02)
    ax_acc.axhline(0.5, color="grey", linewidth=0.8, linestyle=":")
    for ax in (ax_loss, ax_acc):
        ax.set_xlabel("epoch")
        ax.grid(True, alpha=0.3)
        ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    handles, labels = ax_acc.get_legend_handles_labels()
    finish(fig, handles, labels, 2 if any_val else 3, path)
    return True


AVERAGE = "average over subsets"


def plot_accuracy_by_subset(runs, path):
    runs = [r for r in runs if r.results is not None]
    if not runs:
        return False
    subsets = sorted({name for r in runs for name in r.evaluation["subsets"]})
    groups = subsets + [AVERAGE]
    n = len(runs)
    width = 0.8 / n
    x = np.arange(len(groups))
    fig_width = min(16, max(8, 1.1 + len(groups) * (0.5 + 0.45 * n)))
    fig, ax = plt.subplots(figsize=(fig_width, 5.6))
    annotate = len(groups) * n <= 40
    for i, run in enumerate(runs):
        values = []
        for g in groups:
            if g == AVERAGE:
                values.append(number(run.evaluation["average_over_subsets"]["accuracy"]))
            else:
                s = run.evaluation["subsets"].get(g)
                values.append(number(s["accuracy"]) if s is not None else float("nan"))
        pos = x - 0.4 + width * (i + 0.5)
        bars = ax.bar(pos, values, width * 0.92, color=run.color, label=run.label)
        if annotate:
            for bar, v in zip(bars, values):
                if math.isfinite(v):
                    ax.annotate(f"{v:.3f}", (bar.get_x() + bar.get_width() / 2, v), xytext=(0, 2),
                                textcoords="offset points", ha="center", va="bottom",
                                fontsize=8 if n <= 3 else 7, rotation=0 if n <= 3 else 90)
                else:
                    ax.annotate("n/a", (bar.get_x() + bar.get_width() / 2, 0), xytext=(0, 2),
                                textcoords="offset points", ha="center", va="bottom", fontsize=7, color="grey")
    if len(groups) > 1:
        ax.axvline(len(subsets) - 0.5, color="grey", linewidth=0.8)  # subsets | average
    ax.axhline(0.5, color="grey", linewidth=0.8, linestyle=":", label="chance (0.5)")
    ax.set_xticks(x)
    # Subset names turn 30 degrees when they would not fit their group's width (about 0.075 inch
    # a character at 10 pt); the average's label is wrapped onto two lines instead.
    group_inches = (fig_width - 1.2) / len(groups)
    rotate = max(len(g) for g in subsets + ["average over"]) * 0.075 > 0.9 * group_inches
    ax.set_xticklabels(subsets + ["average over\nsubsets"], rotation=30 if rotate else 0,
                       ha="right" if rotate else "center", rotation_mode="anchor" if rotate else "default")
    ax.get_xticklabels()[-1].set_fontweight("bold")
    ax.set_ylabel("accuracy (P(ai) >= 0.5 -> ai)")
    ax.set_ylim(0, 1.1 if annotate else 1.02)
    ax.set_yticks(np.linspace(0, 1, 11))
    ax.set_xlim(-0.6, len(groups) - 0.4)
    ax.set_title("Validation accuracy per subset (generator)")
    ax.grid(True, axis="y", alpha=0.3)
    handles, labels = ax.get_legend_handles_labels()
    handles, labels = handles[1:] + handles[:1], labels[1:] + labels[:1]  # the chance line last
    finish(fig, handles, labels, 3, path)
    return True


def plot_reliability(runs, path):
    runs = [r for r in runs if r.results is not None]
    if not runs:
        return False
    ncols = min(3, len(runs))
    nrows = math.ceil(len(runs) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(5.2 * ncols, 5.0 * nrows), squeeze=False)
    for ax in axes.flat[len(runs):]:
        ax.set_visible(False)
    for ax, run in zip(axes.flat, runs):
        pooled = run.evaluation["pooled"]
        bins = [b for b in pooled["calibration_bins"] if b["count"] > 0]
        lo_min = min([b["lo"] for b in bins] + [0.5])
        x_lo = math.floor(lo_min * 10) / 10
        ax.plot([0, 1], [0, 1], color="grey", linestyle="--", linewidth=1, label="perfect calibration")
        if bins:
            ax.bar([b["lo"] for b in bins], [b["accuracy"] for b in bins], [b["hi"] - b["lo"] for b in bins],
                   align="edge", color=run.color, alpha=0.75, edgecolor="black", linewidth=0.6,
                   label="accuracy in bin")
            ax.plot([b["mean_confidence"] for b in bins], [b["accuracy"] for b in bins], "o", color="black",
                    markersize=4, label="(mean confidence, accuracy)")
            for b in bins:
                ax.annotate(f"n={b['count']}", ((b["lo"] + b["hi"]) / 2, b["accuracy"]), xytext=(0, 3),
                            textcoords="offset points", ha="center", va="bottom", fontsize=7, rotation=90)
        else:
            ax.text(0.5, 0.5, "no non-empty bin", ha="center", va="center", transform=ax.transAxes)
        ax.set_xlim(x_lo, 1.005)
        ax.set_ylim(0, 1.12)
        ax.set_yticks(np.linspace(0, 1, 6))
        ax.set_xlabel("confidence of the predicted class")
        ax.set_ylabel("accuracy")
        ax.set_title(f"{run.label}\nECE {number(pooled['ece']):.4f}, {pooled['images']} images (pooled)",
                     fontsize=10)
        ax.grid(True, alpha=0.3)
    handles = [matplotlib.lines.Line2D([], [], color="grey", linestyle="--", linewidth=1),
               matplotlib.patches.Patch(facecolor="lightgrey", edgecolor="black", linewidth=0.6),
               matplotlib.lines.Line2D([], [], marker="o", linestyle="", color="black", markersize=4)]
    labels = ["perfect calibration", "accuracy in bin (bar = bin's range)", "(mean confidence, accuracy)"]
    fig.suptitle(f"Reliability diagram{'s' if len(runs) > 1 else ''} (all images pooled)", fontsize=12)
    finish(fig, handles, labels, 3 if ncols > 1 else 1, path, fontsize=9)
    return True


def curve_points(curve):
    points = sorted(((number(p["coverage"]), number(p["accuracy"])) for p in curve["points"]), key=lambda p: p[0])
    return [p[0] for p in points], [p[1] for p in points]


def plot_accuracy_coverage(runs, path):
    runs = [r for r in runs if r.results is not None]
    if not runs:
        return False
    fig, ax = plt.subplots(figsize=(9, 5.4))
    any_mi = False
    for run in runs:
        pooled = run.evaluation["pooled"]
        curve = pooled["selective_by_entropy"]
        x, y = curve_points(curve)
        ax.plot(x, y, marker="o", color=run.color,
                label=f"{run.label}: by entropy (area {number(curve['area']):.3f})")
        if run.bayesian():
            any_mi = True
            curve = pooled["bayes"]["selective_by_mutual_information"]
            x, y = curve_points(curve)
            ax.plot(x, y, marker="^", linestyle="--", color=run.color,
                    label=f"{run.label}: by mutual information (area {number(curve['area']):.3f})")
    ax.set_xlim(1.03, 0.07)  # from keeping every image (left) to keeping the most certain tenth
    ax.set_xticks(np.linspace(1, 0.1, 10))
    ax.set_ylim(-0.02, 1.04)
    ax.set_xlabel("coverage: fraction of images kept, most certain first")
    ax.set_ylabel("accuracy on the kept images")
    measures = "predictive entropy (solid)" + (" or mutual information (dashed)" if any_mi else "")
    ax.set_title(f"Selective prediction, all images pooled\nimages ranked by {measures}", fontsize=11)
    ax.grid(True, alpha=0.3)
    handles, labels = ax.get_legend_handles_labels()
    finish(fig, handles, labels, 1 if len(handles) > 2 else len(handles), path, fontsize=9)
    return True


# ---------------------------------------------------------------- main


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog=PROG, description="Plot trainer run folders (metrics.jsonl, results.json) as PNG figures: "
        + ", ".join(FIGURES) + ".")
    parser.add_argument("runs", nargs="+", metavar="RUN", help="run folder written by the trainer (--out)")
    parser.add_argument("--out", required=True, metavar="DIR", help="folder for the PNGs (created if needed)")
    args = parser.parse_args(argv)
    try:
        runs = [load_run(folder) for folder in args.runs]
        runs = [r for r in runs if r.results is not None or r.epochs]
        if not runs:
            raise PlotError("nothing to plot: no run folder holds results.json or an epoch in metrics.jsonl")
        assign_labels(runs)
        if os.path.exists(args.out) and not os.path.isdir(args.out):
            raise PlotError(f"{args.out}: --out exists and is not a folder")
        try:
            os.makedirs(args.out, exist_ok=True)
        except OSError as e:
            raise PlotError(f"{args.out}: cannot create the output folder: {e}") from None
        written = []
        plots = (plot_training_curves, plot_accuracy_by_subset, plot_reliability, plot_accuracy_coverage)
        for plot, name in zip(plots, FIGURES):
            path = os.path.join(args.out, name)
            try:
                if plot(runs, path):
                    written.append(path)
            except OSError as e:
                raise PlotError(f"{path}: cannot write: {e}") from None
        if not any(r.results is not None for r in runs):
            warn("no results.json in any run: only the training curves were drawn")
        if not any(r.epochs for r in runs):
            warn("no epoch in any metrics.jsonl: no training curves")
        if not written:
            raise PlotError("nothing could be plotted")
    except PlotError as e:
        print(f"{PROG}: error: {e}", file=sys.stderr)
        return 1
    for path in written:
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
