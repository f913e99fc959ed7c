#!/usr/bin/python3
"""The whole path a user takes, on tiny images, through the real programs:

  1. an image folder with two generator subsets (DIR/<subset>/{train,val}/{nature,ai}) holding
     PNG, JPEG and BMP files of odd sizes, grayscale and RGBA ones, and one corrupt file;
  2. `trainer` for part of the run (--max-steps: stops with a checkpoint), then `--resume` to
     the end; the run's results.json and every metrics.jsonl line validated against
     models/results.schema.json, per-subset rows, the corrupt file counted and named;
  3. `predict` with the checkpoint on the validation images (CSV and JSON), the corrupt file
     reported as an error row, not fatal;
  4. tools/plot_runs.py on the run folder: its PNGs exist and are PNGs.

Run by ctest as `workflow`:  test_workflow.py TRAINER PREDICT
Skips (exit 77) when python3-jsonschema, PIL or matplotlib is missing (tools/setup.sh
installs them)."""
import csv
import json
import os
import subprocess
import sys
import tempfile

SKIP = 77
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
try:
    import jsonschema
    import numpy as np
    from PIL import Image
    import matplotlib  # noqa: F401  (tools/plot_runs.py needs it)
except ImportError as e:
    print(f"SKIPPED: {e} (apt-get install python3-jsonschema python3-pil python3-matplotlib)")
    sys.exit(SKIP)


def fail(msg):
    print(f"FAILED: {msg}")
    sys.exit(1)


def run(cmd, expect_rc=0):
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    if p.returncode != expect_rc:
        fail(f"{' '.join(cmd)} exited {p.returncode}, expected {expect_rc}\n{p.stdout[-3000:]}\n{p.stderr[-3000:]}")
    return p


def write_images(root):
    """Real: smooth gradients with noise; AI: blocky upsampled patterns. Mixed formats/modes/sizes."""
    rng = np.random.default_rng(7)
    files = []
    for subset in ("gen_a", "gen_b"):
        for split, count in (("train", 12), ("val", 4)):
            for folder in ("nature", "ai"):
                d = os.path.join(root, subset, split, folder)
                os.makedirs(d)
                for i in range(count):
                    w, h = 32 + (i % 3) * 5, 32 + (i % 4) * 3  # odd sizes, resized to 32x32
                    if folder == "nature":
                        yy, xx = np.mgrid[0:h, 0:w]
                        a = (np.stack([xx * 4, yy * 4, (xx + yy) * 2], -1) + rng.normal(0, 10, (h, w, 3)))
                    else:
                        a = np.kron(rng.uniform(0, 255, (h // 4 + 1, w // 4 + 1, 3)), np.ones((4, 4, 1)))[:h, :w]
                    img = Image.fromarray(np.clip(a, 0, 255).astype(np.uint8), "RGB")
                    kind = i % 4
                    if kind == 1:
                        img = img.convert("L")  # grayscale
                    elif kind == 2:
                        img = img.convert("RGBA")
                    ext = {0: "png", 1: "png", 2: "png", 3: "jpg"}[kind] if i % 5 else "bmp"
                    if ext == "bmp" and img.mode == "RGBA":
                        img = img.convert("RGB")
                    path = os.path.join(d, f"{i:02d}.{ext}")
                    img.save(path)
                    files.append(path)
    corrupt = os.path.join(root, "gen_a", "val", "ai", "zz_corrupt.png")
    with open(corrupt, "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40)  # a PNG signature, then garbage
    bad_train = os.path.join(root, "gen_b", "train", "nature", "zz_truncated.jpg")
    with open(files[0 if files[0].endswith(".jpg") else 3], "rb") as f:
        head = f.read()[:60]
    with open(bad_train, "wb") as f:
        f.write(head)  # a JPEG cut short
    return corrupt, bad_train


def main():
    trainer, predict = sys.argv[1], sys.argv[2]
    with open(os.path.join(ROOT, "models", "results.schema.json")) as f:
        schema = json.load(f)
    jsonschema.Draft7Validator.check_schema(schema)
    results_validator = jsonschema.Draft7Validator(schema)
    epoch_validator = jsonschema.Draft7Validator(dict(schema["definitions"]["epoch_record"],
                                                      definitions=schema["definitions"]))

    with tempfile.TemporaryDirectory() as tmp:
        data = os.path.join(tmp, "data")
        corrupt, bad_train = write_images(data)
        out = os.path.join(tmp, "run")
        common = ["--data", data, "--model", "resnet50_attn_bnn", "--epochs", "2", "--batch-size", "8",
                  "--image-size", "32", "--mc-samples", "4", "--threads", "2", "--out", out]
        # 2 subsets x 2 classes x 12 = 48 training images + 1 truncated file: 6 steps per epoch
        run([trainer] + common + ["--max-steps", "4"])
        if not os.path.exists(os.path.join(out, "checkpoint.safetensors")):
            fail("no checkpoint after --max-steps")
        if os.path.exists(os.path.join(out, "results.json")):
            fail("results.json written before the run finished")
        p = run([trainer] + common + ["--resume"])
        if "resumed from" not in p.stderr:
            fail(f"--resume did not say it resumed:\n{p.stderr[-2000:]}")

        results = json.load(open(os.path.join(out, "results.json")))
        errors = sorted(results_validator.iter_errors(results), key=str)
        if errors:
            fail("results.json does not match its schema:\n" + "\n".join(
                f"  {'/'.join(map(str, e.path))}: {e.message}" for e in errors[:10]))
        lines = open(os.path.join(out, "metrics.jsonl")).read().splitlines()
        if [json.loads(l)["epoch"] for l in lines] != [1, 2]:
            fail(f"metrics.jsonl should hold epochs 1 and 2 once each:\n{lines}")
        for l in lines:
            errs = list(epoch_validator.iter_errors(json.loads(l)))
            if errs:
                fail(f"metrics.jsonl line does not match definitions/epoch_record: {errs[0].message}")
        ev = results["evaluation"]
        if sorted(ev["subsets"]) != ["gen_a", "gen_b"] or [s["images"] for s in ev["subsets"].values()] != [8, 8]:
            fail(f"subsets: {sorted(ev['subsets'])}, expected gen_a and gen_b of 8 images each")
        if ev["pooled"]["images"] != 16:  # 2 subsets x 2 classes x 4 val images (the corrupt one skipped)
            fail(f"pooled images {ev['pooled']['images']}, expected 16")
        if "bayes" not in ev["pooled"]:
            fail("the Bayesian variant's results have no uncertainty ('bayes')")
        if not any(corrupt in s for s in results["skipped_files"]):
            fail(f"the corrupt validation file is not named in skipped_files: {results['skipped_files']}")
        if not any(bad_train in s for s in results["training"]["skipped_files"]):
            fail(f"the truncated training file is not named: {results['training']['skipped_files']}")
        if results["training"]["steps"] != 12:  # 49 files in batches of 8, the partial one dropped
            fail(f"steps {results['training']['steps']}, expected 2 epochs x 6")

        ckpt = os.path.join(out, "checkpoint.safetensors")
        val_a = os.path.join(data, "gen_a", "val")
        csv_path = os.path.join(tmp, "p.csv")
        run([predict, "--checkpoint", ckpt, "--mc-samples", "4", "-o", csv_path, val_a])
        rows = list(csv.DictReader(l for l in open(csv_path) if not l.startswith("#")))
        if len(rows) != 9:
            fail(f"predict wrote {len(rows)} rows for 9 files")
        bad = [r for r in rows if r["path"].endswith("zz_corrupt.png")]
        if len(bad) != 1 or not bad[0].get("error"):
            fail(f"the corrupt file should be one error row: {bad}")
        good = [r for r in rows if not r.get("error")]
        if len(good) != 8 or not all(0 <= float(r["p_ai"]) <= 1 for r in good):
            fail(f"expected 8 scored rows with P(ai) in [0, 1]: {good}")
        json_path = os.path.join(tmp, "p.json")
        run([predict, "--checkpoint", ckpt, "--mc-samples", "4", "--format", "json", "-o", json_path, val_a])
        json.load(open(json_path))

        plots = os.path.join(tmp, "plots")
        run([sys.executable, os.path.join(ROOT, "tools", "plot_runs.py"), out, "--out", plots])
        pngs = sorted(f for f in os.listdir(plots) if f.endswith(".png"))
        if len(pngs) < 4:
            fail(f"plot_runs.py wrote {pngs}")
        for f in pngs:
            with open(os.path.join(plots, f), "rb") as fh:
                if fh.read(8) != b"\x89PNG\r\n\x1a\n":
                    fail(f"{f} is not a PNG")
    print("OK: train, stop, resume, results schema, predict, plot")


if __name__ == "__main__":
    main()
