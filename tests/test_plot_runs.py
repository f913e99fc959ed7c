#!/usr/bin/python3
"""Tests of tools/plot_runs.py on fake run folders written in the trainer's schema
(models/train.cpp: metrics.jsonl, results.json; models/metrics.h: SetMetrics::to_json).
No C++ build, no network. Run: /usr/bin/python3 tests/test_plot_runs.py
Needs python3-matplotlib and python3-numpy: without them it prints SKIPPED and exits 77.
ctest: tests/CMakeLists.txt runs it as `plot_runs`."""
import contextlib
import importlib.util
import io
import json
import os
import struct
import subprocess
import sys
import tempfile
import unittest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, "tools", "plot_runs.py")
FIGURES = ["training_curves.png", "accuracy_by_subset.png", "reliability.png", "accuracy_coverage.png"]

SKIP = 77  # ctest's SKIP_RETURN_CODE

spec = importlib.util.spec_from_file_location("plot_runs", SCRIPT)
plot_runs = importlib.util.module_from_spec(spec)
try:
    spec.loader.exec_module(plot_runs)
except ImportError as e:  # python3-matplotlib or python3-numpy missing
    print(f"SKIPPED: {e} (apt-get install python3-matplotlib python3-numpy)")
    sys.exit(SKIP)


# ---------------------------------------------------------------- fake runs in the trainer's schema


def report(images, acc):
    half = images // 2
    cls = {"f1-score": acc, "precision": acc, "recall": acc, "support": half}
    avg = dict(cls, support=images)
    return {"accuracy": acc, "ai": dict(cls), "macro avg": avg, "nature": dict(cls), "weighted avg": dict(avg)}


def selective(acc, null_last=False):
    levels = [1.0, 0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2, 0.1]
    points = [{"accuracy": min(1.0, acc + (1 - lv) * 0.3), "count": int(lv * 40), "coverage": lv} for lv in levels]
    if null_last:
        points[-1].update(accuracy=None, count=0)  # a coverage level with no image: NaN, written as null
    return {"area": acc + 0.1, "aurc": 0.9 - acc, "points": points}


def set_metrics(name, images, acc, bayes, bins=True):
    """One SetMetrics::to_json object; bins=False as in average_over_subsets."""
    calibration = []
    if bins:
        for b in range(15):
            lo, hi = b / 15, (b + 1) / 15
            count = {8: 6, 11: 10, 14: images - 16}.get(b, 0)
            calibration.append({"accuracy": min(1.0, acc + 0.02 * (b - 11)) if count else 0.0, "count": count,
                                "hi": hi, "lo": lo, "mean_confidence": (lo + hi) / 2 if count else 0.0})
    m = {"accuracy": acc, "brier": 0.2, "calibration_bins": calibration,
         "classification_report": report(images, acc), "confusion_matrix": [[images // 4, images // 4],
                                                                            [images // 4, images // 4]],
         "ece": abs(0.95 - acc), "images": images, "name": name, "nll": 0.6, "roc_auc": 0.8,
         "selective_by_entropy": selective(acc)}
    if bayes:
        m["bayes"] = {"mean_expected_entropy": 0.3, "mean_mutual_information": 0.01, "mean_predictive_entropy": 0.31,
                      "mean_std_p_ai": 0.02, "selective_by_mutual_information": selective(acc - 0.05, null_last=True)}
    return m


def make_run(folder, model, subsets, epochs=3, results=True, metrics=True, base=0.7):
    bayes = model != "resnet50"
    os.makedirs(folder, exist_ok=True)
    pooled = set_metrics("all images", 40 * len(subsets), base, bayes)
    if metrics:
        with open(os.path.join(folder, "metrics.jsonl"), "w") as f:
            for e in range(1, epochs + 1):
                record = {"epoch": e, "images_per_second": 50.0, "seconds": 1.2, "skipped_files": 0, "step": 8 * e,
                          "train_accuracy": min(1.0, 0.5 + 0.1 * e), "train_loss": (170.0 if bayes else 2.0) / e,
                          "val": dict(pooled, accuracy=min(1.0, 0.5 + 0.08 * e))}
                f.write(json.dumps(record, separators=(",", ":")) + "\n")
    if results:
        config = {"batch_size": 8, "data": "built-in synthetic", "device": "cpu", "epochs": epochs, "image_size": 32,
                  "kl_weight": 0.015625, "lr": 0.001, "mc_samples": 5, "model": model, "optimizer": "adam",
                  "prior_sigma": 1.0, "seed": 0, "weight_decay": 0.0, "weights": ""}
        subs = {s: set_metrics(s, 40, min(1.0, base + 0.05 * i), bayes) for i, s in enumerate(subsets)}
        average = set_metrics("average over subsets", 40 * len(subsets), base + 0.02, bayes, bins=False)
        doc = {"classes": {"0": "real (folder nature or real)", "1": "ai (folder ai or fake)"}, "config": config,
               "evaluation": {"average_over_subsets": average, "classes": {"0": "real", "1": "ai"},
                              "decision": "P(ai) >= 0.5 -> ai", "pooled": pooled, "subsets": subs},
               "model": model, "skipped_files": [], "training": {"epochs": epochs, "skipped_files": [],
                                                                  "steps": 8 * epochs}}
        with open(os.path.join(folder, "results.json"), "w") as f:
            f.write(json.dumps(doc, indent=2) + "\n")
    return folder


def png_size(path):
    """(width, height) from a PNG's IHDR; AssertionError when the file is not a PNG."""
    with open(path, "rb") as f:
        head = f.read(24)
    assert head[:8] == b"\x89PNG\r\n\x1a\n" and head[12:16] == b"IHDR", f"{path} is not a PNG"
    return struct.unpack(">II", head[16:24])


class PlotRunsTest(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory(prefix="plot_runs_test_")
        self.dir = self.tmp.name
        self.out = os.path.join(self.dir, "plots")

    def tearDown(self):
        self.tmp.cleanup()

    def path(self, *parts):
        return os.path.join(self.dir, *parts)

    def plot(self, *runs, out=None):
        """main() in this process (fast): (exit status, stdout, stderr)."""
        stdout, stderr = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
            try:
                rc = plot_runs.main([*runs, "--out", out or self.out])
            except SystemExit as e:  # argparse
                rc = e.code
        return rc, stdout.getvalue(), stderr.getvalue()

    def load(self, run):
        with contextlib.redirect_stderr(io.StringIO()):
            return plot_runs.load_run(run)

    def assert_pngs(self, names):
        self.assertEqual(sorted(os.listdir(self.out)), sorted(names))
        for name in names:
            path = os.path.join(self.out, name)
            width, height = png_size(path)
            self.assertGreaterEqual(width, 500, name)
            self.assertGreaterEqual(height, 400, name)
            self.assertLessEqual(width * height, 4000 * 4000, name)
            self.assertGreater(os.path.getsize(path), 10_000, name)

    # ---- the command line, end to end

    def test_command_line_three_detectors(self):
        subsets = ["adm", "biggan", "midjourney", "stable_diffusion_v_1_4"]
        runs = [make_run(self.path("r50"), "resnet50", subsets),
                make_run(self.path("bnn"), "resnet50_bnn", subsets, base=0.75),
                make_run(self.path("attn"), "resnet50_attn_bnn", subsets[:3], epochs=1, base=0.8)]
        proc = subprocess.run([sys.executable, SCRIPT, *runs, "--out", self.out], capture_output=True, text=True,
                              timeout=60)
        self.assertEqual(proc.returncode, 0, proc.stderr)
        self.assertEqual(proc.stdout.split(), [os.path.join(self.out, n) for n in FIGURES])
        self.assertEqual(proc.stderr, "")
        self.assert_pngs(FIGURES)

    def test_usage_errors(self):
        rc, _, err = self.plot()  # no run folder
        self.assertEqual(rc, 2)
        self.assertIn("RUN", err)

    # ---- partial runs: plot what exists, warn about what is missing

    def test_run_without_results_draws_training_curves_only(self):
        run = make_run(self.path("running"), "resnet50_bnn", ["a"], results=False)
        rc, out, err = self.plot(run)
        self.assertEqual(rc, 0, err)
        self.assertEqual(out.split(), [os.path.join(self.out, "training_curves.png")])
        self.assertIn(os.path.join(run, "results.json"), err)
        self.assert_pngs(["training_curves.png"])

    def test_run_without_metrics_draws_the_evaluation_figures(self):
        run = make_run(self.path("evaluated"), "resnet50", ["a", "b"], metrics=False)
        rc, out, err = self.plot(run)
        self.assertEqual(rc, 0, err)
        self.assertIn(os.path.join(run, "metrics.jsonl"), err)
        self.assert_pngs(FIGURES[1:])

    def test_mixed_runs_warn_about_the_incomplete_one(self):
        done = make_run(self.path("done"), "resnet50", ["a"])
        empty = self.path("empty")
        os.makedirs(empty)
        rc, out, err = self.plot(done, empty)
        self.assertEqual(rc, 0, err)
        self.assertIn(empty, err)
        self.assertIn("warning", err)
        self.assertEqual(len(out.split()), 4)

    def test_nothing_to_plot_fails(self):
        empty = self.path("empty")
        os.makedirs(empty)
        rc, out, err = self.plot(empty)
        self.assertEqual(rc, 1)
        self.assertEqual(out, "")
        self.assertIn("nothing to plot", err)
        self.assertIn(empty, err)
        self.assertFalse(os.path.exists(self.out))

    def test_empty_metrics_file_and_no_results_fails(self):
        run = self.path("fresh")
        os.makedirs(run)
        open(os.path.join(run, "metrics.jsonl"), "w").close()
        rc, _, err = self.plot(run)
        self.assertEqual(rc, 1)
        self.assertIn("nothing to plot", err)

    def test_half_written_last_line_is_skipped(self):
        run = make_run(self.path("live"), "resnet50", ["a"], results=False)
        with open(os.path.join(run, "metrics.jsonl"), "a") as f:
            f.write('{"epoch":4,"train_lo')  # the trainer is writing this line
        rc, _, err = self.plot(run)
        self.assertEqual(rc, 0, err)
        self.assertIn("line 4", err)
        with contextlib.redirect_stderr(io.StringIO()):
            self.assertEqual(len(plot_runs.read_metrics(os.path.join(run, "metrics.jsonl"))), 3)

    def test_a_resumed_epoch_keeps_its_last_record(self):
        run = make_run(self.path("resumed"), "resnet50", ["a"], epochs=2, results=False)
        path = os.path.join(run, "metrics.jsonl")
        with open(path, "a") as f:
            f.write(json.dumps({"epoch": 2, "train_loss": 0.1, "train_accuracy": 0.99}) + "\n")
        records = plot_runs.read_metrics(path)
        self.assertEqual([r["epoch"] for r in records], [1, 2])
        self.assertEqual(records[1]["train_accuracy"], 0.99)

    # ---- errors: exit 1, the path named

    def assert_fails(self, runs, *needles):
        rc, out, err = self.plot(*runs)
        self.assertEqual(rc, 1, err)
        self.assertEqual(out, "")
        self.assertTrue(err.startswith("plot_runs: error: "), err)
        for needle in needles:
            self.assertIn(needle, err)

    def test_missing_run_folder(self):
        good = make_run(self.path("good"), "resnet50", ["a"])
        self.assert_fails([good, self.path("nope")], self.path("nope"), "no such run folder")

    def test_run_path_is_a_file(self):
        path = self.path("file.txt")
        open(path, "w").close()
        self.assert_fails([path], path, "not a folder")

    def test_malformed_results_json(self):
        run = make_run(self.path("bad"), "resnet50", ["a"])
        with open(os.path.join(run, "results.json"), "w") as f:
            f.write('{"model": "resnet50", "evaluation": {')
        self.assert_fails([run], os.path.join(run, "results.json"), "malformed JSON")

    def test_malformed_metrics_line(self):
        run = make_run(self.path("bad"), "resnet50", ["a"])
        path = os.path.join(run, "metrics.jsonl")
        with open(path) as f:
            lines = f.readlines()
        lines[1] = "{not json}\n"
        with open(path, "w") as f:
            f.writelines(lines)
        self.assert_fails([run], path + " line 2", "malformed JSON")

    def test_results_json_of_another_schema(self):
        run = make_run(self.path("other"), "resnet50", ["a"])
        path = os.path.join(run, "results.json")
        with open(path) as f:
            doc = json.load(f)
        del doc["evaluation"]["pooled"]["calibration_bins"]
        with open(path, "w") as f:
            json.dump(doc, f)
        self.assert_fails([run], path, "evaluation.pooled.calibration_bins")

    def test_wrong_type_in_metrics(self):
        run = make_run(self.path("typed"), "resnet50", ["a"], results=False)
        path = os.path.join(run, "metrics.jsonl")
        with open(path, "w") as f:
            f.write(json.dumps({"epoch": 1, "train_loss": "high", "train_accuracy": 0.5}) + "\n")
        self.assert_fails([run], path + " line 1", "train_loss")

    def test_out_is_a_file(self):
        run = make_run(self.path("r"), "resnet50", ["a"])
        out = self.path("plots.png")
        open(out, "w").close()
        rc, _, err = self.plot(run, out=out)
        self.assertEqual(rc, 1)
        self.assertIn(out, err)

    # ---- labels

    def test_labels_name_folder_and_model_and_tell_equal_names_apart(self):
        a = self.load(make_run(self.path("x", "latest"), "resnet50", ["a"]))
        b = self.load(make_run(self.path("y", "latest"), "resnet50_bnn", ["a"]))
        plot_runs.assign_labels([a, b])
        self.assertEqual((a.label, b.label), ("x/latest (resnet50)", "y/latest (resnet50_bnn)"))
        self.assertNotEqual(a.color, b.color)

    def test_model_of_an_unfinished_run_from_the_checkpoint_header(self):
        run = make_run(self.path("live"), "resnet50", ["a"], results=False)
        header = json.dumps({"__metadata__": {"model": "resnet50_attn_bnn", "format": "aidetect-checkpoint-1"}})
        with open(os.path.join(run, "checkpoint.safetensors"), "wb") as f:
            f.write(struct.pack("<Q", len(header)) + header.encode())
        loaded = self.load(run)
        plot_runs.assign_labels([loaded])
        self.assertEqual(loaded.label, "live (resnet50_attn_bnn)")


if __name__ == "__main__":
    unittest.main()
