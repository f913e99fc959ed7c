#!/usr/bin/python3
"""Model throughput, this engine (bench_models) against PyTorch, workload by workload.

Run from the repository root, after building bench_models (Release):
    cmake --build build --target bench_models
    /usr/bin/python3 bench/torch_models.py --bench build/bench/bench_models
    /usr/bin/python3 bench/torch_models.py --bench build/bench/bench_models --sizes 64 --variants resnet50 --modes train
    /usr/bin/python3 bench/torch_models.py --bench build/bench/bench_models --profile --variants resnet50
        (a training step's time by category on each side: where we lose to PyTorch)
Without --bench it times PyTorch alone. Debian's python3-torch installs for /usr/bin/python3.
On a machine busy with other work, two-thread wall-clock times mostly measure that work (an
OpenMP team waits for its slowest thread); `--threads 1 --cpu-time` then compares per-core
efficiency, timing process CPU time, which time slices taken by other processes do not inflate.

Workloads: each detector (resnet50, resnet50_bnn, resnet50_attn_bnn) at 64x64 batch 32 and
224x224 batch 8, a training step and inference, defined as in bench/bench_models.cpp:
  train: forward, cross-entropy (+ KL * --kl-weight for the Bayesian heads, one head sample
         per step), loss.item(), zero_grad (set_to_none), backward, Adam step (lr 1e-3);
  infer: eval mode, inference_mode, one backbone pass, then for the Bayesian heads
         --mc-samples head draws (default 50, the reference's evaluation; 0: posterior mean),
         softmax probabilities.
The PyTorch models are those of tests/parity/make_fixtures.py (torchvision resnet50, the
bayesian-torch LinearReparameterization head, the spatial attention), eager mode.

Fairness: both sides use the same threads (--threads, default every core: torch.set_num_threads
and bench_models --threads). PyTorch is tried with channels_last and NCHW tensors, and in
training with Adam's for-loop and foreach implementations; its fastest combination (a short
probe per workload) is kept, so the comparison is against PyTorch at its best. The two sides
alternate per workload (--rounds rounds, the order flipped each round, each a bench_models run
of --reps timed steps after --warmup and as many PyTorch steps), so load from other processes
hits both alike; figures are medians of all rounds' steps. The load average is recorded before
and after each workload. Results go to --out (default bench/results/) as
models-<date>-<host>.json and .md.
"""
import argparse
import contextlib
import datetime
import json
import os
import platform
import shlex
import statistics
import subprocess
import sys
import time

import torch
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(ROOT, "tests", "parity"))
from make_fixtures import Detector  # noqa: E402  (the reference detectors)

VARIANTS = ["resnet50", "resnet50_bnn", "resnet50_attn_bnn"]
DEFAULT_BATCH = {64: 32, 224: 8}


def loadavg():
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


def cpu_model():
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown CPU"


def blas_library():
    try:
        return os.path.realpath("/usr/lib/x86_64-linux-gnu/libblas.so.3")
    except OSError:
        return "unknown"


def features(m, x):
    """Detector.forward up to the pooled features (one backbone pass for MC head samples)."""
    x = m.maxpool(m.relu(m.bn1(m.conv1(x))))
    x = m.layer4(m.layer3(m.layer2(m.layer1(x))))
    if m.variant == "resnet50_attn_bnn":
        x = m.attention(x)
    return torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)


class TorchWorkload:
    """One PyTorch workload: a model in one layout (and optimiser variant), stepping on fixed inputs."""

    def __init__(self, variant, mode, size, batch, layout, foreach, mc_samples, kl_weight):
        torch.manual_seed(0)
        self.variant, self.mode, self.mc_samples, self.kl_weight = variant, mode, mc_samples, kl_weight
        self.bayes = variant != "resnet50"
        self.model = Detector(variant).to(memory_format=layout)
        self.x = torch.randn(batch, 3, size, size).contiguous(memory_format=layout)
        self.labels = torch.arange(batch) % 2
        if mode == "train":
            self.model.train()
            self.opt = torch.optim.Adam(self.model.parameters(), lr=1e-3, foreach=foreach)
        else:
            self.model.eval()

    def eps(self):
        return torch.randn(2, 2048), torch.randn(2)

    def train_step(self, mark=None):
        """mark(name) -> context manager around the forward, backward and optimizer phases (profiling)."""
        mark = mark or (lambda name: contextlib.nullcontext())
        with mark(FORWARD):
            logits = self.model(self.x, *self.eps()) if self.bayes else self.model(self.x)
            loss = F.cross_entropy(logits, self.labels)
            if self.bayes:
                loss = loss + self.kl_weight * self.model.fc.kl()
        loss.item()
        self.opt.zero_grad(set_to_none=True)
        with mark(BACKWARD):
            loss.backward()
        with mark(OPTIMIZER):
            self.opt.step()

    def infer_step(self):
        with torch.inference_mode():
            f = features(self.model, self.x)
            fc = self.model.fc
            if not self.bayes:
                probs = F.softmax(fc(f), dim=1)
            elif self.mc_samples > 0:
                probs = torch.stack([F.softmax(fc(f, *self.eps()), dim=1) for _ in range(self.mc_samples)])
            else:
                probs = F.softmax(F.linear(f, fc.mu_weight, fc.mu_bias), dim=1)
            probs.sum().item()

    def step(self):
        self.train_step() if self.mode == "train" else self.infer_step()

    def timed(self, reps, clock=time.perf_counter):
        samples = []
        for _ in range(reps):
            start = clock()
            self.step()
            samples.append(clock() - start)
        return samples


def best_torch_workload(variant, mode, size, batch, a):
    """The fastest PyTorch configuration for this workload (probe: 1 warm-up + a.probe_reps steps each)."""
    layouts = [("channels_last", torch.channels_last), ("nchw", torch.contiguous_format)]
    foreach = [False, True] if mode == "train" else [None]
    best = None
    for layout_name, layout in layouts:
        for fe in foreach:
            w = TorchWorkload(variant, mode, size, batch, layout, fe, a.mc_samples, a.kl_weight)
            w.step()
            t = statistics.median(w.timed(a.probe_reps, a.clock))
            name = layout_name + ("" if fe is None else (", adam foreach" if fe else ", adam for-loop"))
            if best is None or t < best[0]:
                best = (t, name, w)
            else:
                del w
    return best[2], best[1]


def ours_samples(a, variant, mode, size, batch):
    cmd = [a.bench, "--variant", variant, "--mode", mode, "--size", str(size), "--batch", str(batch),
           "--reps", str(a.reps), "--warmup", str(a.warmup), "--threads", str(a.threads),
           "--mc-samples", str(a.mc_samples), "--kl-weight", str(a.kl_weight), "--json", "-"]
    if a.cpu_time:
        cmd.append("--cpu-time")
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    result = json.loads(out)["results"][0]
    return result["step_seconds"], result["inference_head"]


# ---- profiles: one training step's time by category, ours (bench_models --profile) and PyTorch's ----
FORWARD, BACKWARD, OPTIMIZER = "## forward", "## backward", "## optimizer"
CATEGORIES = ["conv2d fwd", "conv2d bwd", "batch_norm fwd", "batch_norm bwd", "relu + residual add fwd",
              "relu + residual add bwd", "other fwd (pool, head, loss, attention; torch: + Python glue)",
              "other bwd", "autograd engine (graph walk, gradient accumulation)", "optimizer step (Adam)",
              "unaccounted (zero_grad, loss.item, ...)"]


def our_category(kind, name):
    if kind == "phase":
        return CATEGORIES[9]
    if kind == "autograd":
        return CATEGORIES[8]
    if kind == "other":
        return CATEGORIES[10]
    fwd = kind == "forward"
    if name == "conv2d":
        return CATEGORIES[0 if fwd else 1]
    if name == "batch_norm2d":
        return CATEGORIES[2 if fwd else 3]
    if name in ("relu", "add_relu"):
        return CATEGORIES[4 if fwd else 5]
    return CATEGORIES[6 if fwd else 7]


def torch_category(marker, name):
    if marker == OPTIMIZER:
        return CATEGORIES[9]
    if marker == FORWARD:
        if name in ("aten::conv2d", "aten::convolution"):
            return CATEGORIES[0]
        if name == "aten::batch_norm":
            return CATEGORIES[2]
        if name in ("aten::relu_", "aten::relu", "aten::add_"):  # torchvision: out += identity; relu_(out)
            return CATEGORIES[4]
        return CATEGORIES[6]
    op = name.replace("autograd::engine::evaluate_function: ", "")
    if op == "ConvolutionBackward0":
        return CATEGORIES[1]
    if op == "NativeBatchNormBackward0":
        return CATEGORIES[3]
    if op in ("ReluBackward0", "AddBackward0"):
        return CATEGORIES[5]
    if op == "torch::autograd::AccumulateGrad":
        return CATEGORIES[8]
    return CATEGORIES[7]


def torch_profile_step(w, steps):
    """{category: seconds per step}, step seconds, and the profiler (for its own table)."""
    from torch.profiler import ProfilerActivity, profile, record_function
    times = {c: 0.0 for c in CATEGORIES}
    total = 0.0
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(steps):
            start = time.perf_counter()
            w.train_step(mark=record_function)
            total += time.perf_counter() - start
    markers = {e.id: e for e in prof.events() if e.name in (FORWARD, BACKWARD, OPTIMIZER)}
    covered = {}
    for e in prof.events():
        parent = e.cpu_parent
        if parent is None or parent.id not in markers:
            continue
        seconds = e.time_range.elapsed_us() * 1e-6
        times[torch_category(parent.name, e.name)] += seconds
        covered[parent.id] = covered.get(parent.id, 0.0) + seconds
    for marker in markers.values():  # marker time outside its children: glue of that phase
        glue = max(0.0, marker.time_range.elapsed_us() * 1e-6 - covered.get(marker.id, 0.0))
        times[{FORWARD: CATEGORIES[6], BACKWARD: CATEGORIES[8], OPTIMIZER: CATEGORIES[9]}[marker.name]] += glue
    times[CATEGORIES[10]] += max(0.0, total - sum(times.values()))
    return {c: t / steps for c, t in times.items()}, total / steps, prof


def our_profile_step(a, variant, size, batch):
    cmd = [a.bench, "--profile", "--variant", variant, "--size", str(size), "--batch", str(batch),
           "--profile-steps", str(a.profile_steps), "--warmup", str(a.warmup), "--threads", str(a.threads),
           "--kl-weight", str(a.kl_weight), "--json", "-"]
    run = subprocess.run(cmd, check=True, capture_output=True, text=True)
    result = json.loads(run.stdout)["results"][0]
    times = {c: 0.0 for c in CATEGORIES}
    for e in result["profile"]:
        times[our_category(e["kind"], e["name"])] += e["ms_per_step"] * 1e-3
    return times, result["ms_per_step"] * 1e-3, run.stderr


def run_profiles(a, started, machine):
    reports = []
    for size in a.sizes:
        batch = a.batch or DEFAULT_BATCH.get(size, 8)
        for variant in a.variants:
            load_before = loadavg()
            w, config = best_torch_workload(variant, "train", size, batch, a)
            w.step()
            ours_runs, torch_runs = [], []
            for r in range(a.rounds):  # alternating, the order flipped each round
                for side in (["ours", "torch"] if r % 2 == 0 else ["torch", "ours"]):
                    if side == "torch":
                        theirs, torch_step, prof = torch_profile_step(w, a.profile_steps)
                        torch_runs.append((theirs, torch_step))
                    elif a.bench:
                        ours, ours_step, ours_text = our_profile_step(a, variant, size, batch)
                        ours_runs.append((ours, ours_step))
            load_after = loadavg()
            if a.bench:
                print(ours_text)  # the last round's full table
            # per category and for the step: the median over rounds
            theirs, torch_step = median_profile(torch_runs)
            ours, ours_step = median_profile(ours_runs) if ours_runs else (None, None)
            print(f"PyTorch {torch.__version__}: {variant} training step, {size}x{size}, batch {batch}, "
                  f"{torch.get_num_threads()} threads, {config}, {a.profile_steps} step(s) (loadavg {load_after})")
            print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=a.profile_rows))
            rows = []
            for c in CATEGORIES:
                o = ours[c] if ours else None
                rows.append({"category": c, "ours_ms": o * 1e3 if ours else None, "torch_ms": theirs[c] * 1e3,
                             "ours_percent": 100 * o / ours_step if ours else None,
                             "torch_percent": 100 * theirs[c] / torch_step,
                             "excess_ms": (o - theirs[c]) * 1e3 if ours else None})
            if ours:
                rows.sort(key=lambda r: -r["excess_ms"])
            title = f"{variant} training step {size}x{size} b{batch}"
            print(f"\n{title}: time per step by category (ours - torch: where we lose, largest first)")
            print(profile_text(rows, ours_step if ours else None, torch_step))
            reports.append({"variant": variant, "size": size, "batch": batch, "torch_config": config,
                            "ours_step_ms": ours_step * 1e3 if ours else None, "torch_step_ms": torch_step * 1e3,
                            "categories": rows, "loadavg_before": load_before, "loadavg_after": load_after})
    report = {"date": started.isoformat(timespec="seconds"), "machine": machine, "command": command_line(),
              "note": a.note, "profile_steps": a.profile_steps, "rounds": a.rounds, "profiles": reports}
    write_results(a, started, machine, "profile", report, profile_markdown(report))


def median_profile(runs):
    return ({c: statistics.median(r[0][c] for r in runs) for c in CATEGORIES},
            statistics.median(r[1] for r in runs))


def profile_text(rows, ours_step, torch_step):
    lines = [f"  {'category':62} {'ours ms':>9} {'%':>5} {'torch ms':>9} {'%':>5} {'ours-torch':>10}"]
    for r in rows:
        o = f"{r['ours_ms']:9.1f} {r['ours_percent']:5.1f}" if r["ours_ms"] is not None else f"{'-':>9} {'-':>5}"
        d = f"{r['excess_ms']:10.1f}" if r["excess_ms"] is not None else f"{'-':>10}"
        lines.append(f"  {r['category']:62} {o} {r['torch_ms']:9.1f} {r['torch_percent']:5.1f} {d}")
    o = f"{ours_step * 1e3:9.1f}" if ours_step else f"{'-':>9}"
    lines.append(f"  {'step':62} {o} {'':5} {torch_step * 1e3:9.1f}")
    return "\n".join(lines)


def profile_markdown(report):
    m = report["machine"]
    lines = [f"# Where a training step's time goes: this engine vs PyTorch {m['torch']}", "",
             f"- date: {report['date']}",
             f"- machine: {m['host']}, {m['cpu']}, {m['online_cpus']} CPUs, {m['threads']} threads on both sides",
             f"- command: `{report['command']}`",
             f"- {report['rounds']} alternating rounds of {report['profile_steps']} profiled step(s) per side after "
             "warm-up, median per category over rounds; wall-clock; ours from the "
             "OpObserver profiler (engine/profile.h), PyTorch's from torch.profiler (phases marked with "
             "record_function); rows sorted by ours - PyTorch"]
    if report["note"]:
        lines.append(f"- note: {report['note']}")
    for p in report["profiles"]:
        ours = f"{p['ours_step_ms']:.0f}" if p["ours_step_ms"] else "-"
        lines += ["", f"## {p['variant']} training step, {p['size']}x{p['size']}, batch {p['batch']}: "
                  f"ours {ours} ms, PyTorch {p['torch_step_ms']:.0f} ms ({p['torch_config']}); "
                  f"loadavg {p['loadavg_before']} -> {p['loadavg_after']}", "",
                  "| category | ours ms | % | PyTorch ms | % | ours - PyTorch ms |", "|---|---:|---:|---:|---:|---:|"]
        for r in p["categories"]:
            o = f"{r['ours_ms']:.1f} | {r['ours_percent']:.1f}" if r["ours_ms"] is not None else "- | -"
            d = f"{r['excess_ms']:.1f}" if r["excess_ms"] is not None else "-"
            lines.append(f"| {r['category']} | {o} | {r['torch_ms']:.1f} | {r['torch_percent']:.1f} | {d} |")
    return "\n".join(lines) + "\n"


def command_line():
    return shlex.join(["/usr/bin/python3", "bench/torch_models.py"] + sys.argv[1:])


def write_results(a, started, machine, kind, report, markdown_text):
    if not a.out:
        return
    os.makedirs(a.out, exist_ok=True)
    stem = os.path.join(a.out, f"{kind}-{started:%Y%m%d-%H%M}-{machine['host']}")
    with open(stem + ".json", "w") as f:
        json.dump(report, f, indent=1)
        f.write("\n")
    with open(stem + ".md", "w") as f:
        f.write(markdown_text)
    print(f"\nwrote {stem}.json and {stem}.md")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bench", help="path to bench_models (omit to time PyTorch only)")
    ap.add_argument("--sizes", default="64,224", help="image sides, comma-separated (default 64,224)")
    ap.add_argument("--batch", type=int, default=0, help="batch (default: 32 at 64x64, 8 at 224x224)")
    ap.add_argument("--variants", default=",".join(VARIANTS))
    ap.add_argument("--modes", default="train,infer")
    ap.add_argument("--rounds", type=int, default=3, help="alternations per workload")
    ap.add_argument("--reps", type=int, default=3, help="timed steps per side per round")
    ap.add_argument("--warmup", type=int, default=1, help="untimed steps before each of our runs")
    ap.add_argument("--probe-reps", type=int, default=2, help="steps per PyTorch configuration in the probe")
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--mc-samples", type=int, default=50)
    ap.add_argument("--cpu-time", action="store_true",
                    help="process CPU time instead of wall-clock on both sides (use with --threads 1 on a busy machine)")
    ap.add_argument("--kl-weight", type=float, default=1e-3)
    ap.add_argument("--out", default=os.path.join(ROOT, "bench", "results"), help="folder for the results files ('' : none)")
    ap.add_argument("--note", default="", help="a line for the results file (e.g. how busy the machine was)")
    ap.add_argument("--profile", action="store_true",
                    help="instead of throughput: each side's training step by category, side by side (and PyTorch's op table)")
    ap.add_argument("--profile-steps", type=int, default=1, help="profiled steps per side per round (--profile)")
    ap.add_argument("--profile-rows", type=int, default=20, help="rows of PyTorch's op table (--profile)")
    a = ap.parse_args()
    a.clock = time.process_time if a.cpu_time else time.perf_counter
    a.sizes = [int(s) for s in a.sizes.split(",")]
    a.variants = a.variants.split(",")
    a.modes = a.modes.split(",")
    for v in a.variants:
        if v not in VARIANTS:
            ap.error(f"unknown variant {v}: choose from {', '.join(VARIANTS)}")
    torch.set_num_threads(a.threads)
    os.environ["OMP_NUM_THREADS"] = str(a.threads)  # for bench_models
    started = datetime.datetime.now().astimezone()
    machine = {"host": platform.node(), "cpu": cpu_model(), "online_cpus": os.cpu_count(), "threads": a.threads,
               "torch": torch.__version__, "mkldnn": torch.backends.mkldnn.is_available(), "blas": blas_library()}
    if a.profile:
        return run_profiles(a, started, machine)
    print(f"{started:%Y-%m-%d %H:%M %Z}, {machine['host']}: {machine['cpu']}, {machine['online_cpus']} CPUs; "
          f"torch {torch.__version__} (oneDNN {machine['mkldnn']}), {a.threads} threads; loadavg {loadavg()}")
    print(f"images/s = batch / median step time ({'process CPU time' if a.cpu_time else 'wall-clock'}); ratio = ours / PyTorch (above 1: we are faster)\n")
    header = f"{'workload':36} {'ours img/s':>10} {'torch img/s':>11} {'ratio':>6}  {'torch config':30} loadavg before -> after"
    print(header)
    rows = []
    for size in a.sizes:
        batch = a.batch or DEFAULT_BATCH.get(size, 8)
        for variant in a.variants:
            for mode in a.modes:
                load_before = loadavg()
                tw, config = best_torch_workload(variant, mode, size, batch, a)
                ours, theirs, head = [], [], ""
                for r in range(a.rounds):
                    order = ["ours", "torch"] if r % 2 == 0 else ["torch", "ours"]
                    for side in order:
                        if side == "torch":
                            theirs += tw.timed(a.reps, a.clock)
                        elif a.bench:
                            samples, head = ours_samples(a, variant, mode, size, batch)
                            ours += samples
                del tw
                load_after = loadavg()
                t_med = statistics.median(theirs)
                o_med = statistics.median(ours) if ours else None
                row = {"variant": variant, "mode": mode, "size": size, "batch": batch,
                       "ours_images_per_s": batch / o_med if o_med else None, "torch_images_per_s": batch / t_med,
                       "ratio": t_med / o_med if o_med else None, "torch_config": config,
                       "inference_head": head, "ours_step_seconds": ours, "torch_step_seconds": theirs,
                       "loadavg_before": load_before, "loadavg_after": load_after}
                rows.append(row)
                name = f"{variant} {mode} {size}x{size} b{batch}"
                ours_txt = f"{row['ours_images_per_s']:10.2f}" if o_med else f"{'-':>10}"
                ratio_txt = f"{row['ratio']:6.2f}" if o_med else f"{'-':>6}"
                print(f"{name:36} {ours_txt} {row['torch_images_per_s']:11.2f} {ratio_txt}  {config:30} "
                      f"{load_before} -> {load_after}", flush=True)

    report = {"date": started.isoformat(timespec="seconds"), "machine": machine, "command": command_line(),
              "note": a.note, "settings": {k: getattr(a, k) for k in
                                           ("rounds", "reps", "warmup", "probe_reps", "mc_samples", "kl_weight", "cpu_time")},
              "results": rows}
    write_results(a, started, machine, "models", report, markdown(report))


def markdown(report):
    m, s = report["machine"], report["settings"]
    lines = [f"# Model throughput: this engine vs PyTorch {m['torch']}",
             "",
             f"- date: {report['date']}",
             f"- machine: {m['host']}, {m['cpu']}, {m['online_cpus']} CPUs, {m['threads']} threads on both sides",
             f"- PyTorch: {m['torch']}, oneDNN {m['mkldnn']}, BLAS {m['blas']}; eager mode, fastest of "
             "channels_last/NCHW (and Adam for-loop/foreach in training)",
             f"- command: `{report['command']}`",
             f"- method: {s['rounds']} alternating rounds x {s['reps']} steps per side per workload, medians of "
             f"{'process CPU time' if s['cpu_time'] else 'wall-clock'} per step; "
             f"KL weight {s['kl_weight']}; Bayesian inference: {s['mc_samples']} head samples per backbone pass "
             "(0: posterior mean)",
             ]
    if report["note"]:
        lines.append(f"- note: {report['note']}")
    lines += ["", "| workload | ours img/s | PyTorch img/s | ratio | PyTorch config | loadavg before -> after |",
              "|---|---:|---:|---:|---|---|"]
    for r in report["results"]:
        ours = f"{r['ours_images_per_s']:.2f}" if r["ours_images_per_s"] else "-"
        ratio = f"{r['ratio']:.2f}" if r["ratio"] else "-"
        lines.append(f"| {r['variant']} {r['mode']} {r['size']}x{r['size']} b{r['batch']} | {ours} | "
                     f"{r['torch_images_per_s']:.2f} | {ratio} | {r['torch_config']} | "
                     f"{r['loadavg_before']} -> {r['loadavg_after']} |")
    lines.append("")
    lines.append("ratio = ours / PyTorch images per second (above 1: this engine is faster).")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
