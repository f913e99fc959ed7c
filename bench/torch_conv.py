#!/usr/bin/python3
"""Convolution speed, this engine's CPU kernels against PyTorch (oneDNN), per ResNet50 shape.

Run from the repository root, after a Release build of bench_kernels:
    /usr/bin/python3 bench/torch_conv.py --bench build/bench/bench_kernels
    /usr/bin/python3 bench/torch_conv.py --bench build/bench/bench_kernels --config b8_224 --only 56x56_64to64_3x3s1
Without --bench it times PyTorch alone. Debian's python3-torch installs for /usr/bin/python3.
On a machine busy with other work, wall-clock times of two threads mostly measure the other
work; `--threads 1 --cpu-time` then compares per-core efficiency (process CPU time, which time
slices taken by other processes do not inflate).

Both sides run on the same threads (--threads, default: all cores), shape by shape, one after
the other, so that load from other processes hits both alike; each time is the median of
--repeats samples. PyTorch is timed with channels_last and with contiguous (NCHW) tensors and
its faster layout is reported: the comparison is against PyTorch at its best. Forward runs
under no_grad; the backward passes call aten.convolution_backward for one gradient at a time,
as autograd does. The shapes mirror bench/kernels/conv2d.cpp (same names), "uses" is how often
each occurs in ResNet50, and the totals weight each shape by its uses (the stem has no
backward-data in training: its input is the image).
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import time

import torch

# (input size divisor, C, K, kernel, stride, pad, uses): torchvision ResNet50, stride on the 3x3.
RESNET50_CONVS = [
    (1, 3, 64, 7, 2, 3, 1),
    (4, 64, 64, 1, 1, 0, 1), (4, 64, 64, 3, 1, 1, 3), (4, 64, 256, 1, 1, 0, 4), (4, 256, 64, 1, 1, 0, 2),
    (4, 256, 128, 1, 1, 0, 1), (4, 128, 128, 3, 2, 1, 1), (4, 256, 512, 1, 2, 0, 1),
    (8, 128, 128, 3, 1, 1, 3), (8, 128, 512, 1, 1, 0, 4), (8, 512, 128, 1, 1, 0, 3),
    (8, 512, 256, 1, 1, 0, 1), (8, 256, 256, 3, 2, 1, 1), (8, 512, 1024, 1, 2, 0, 1),
    (16, 256, 256, 3, 1, 1, 5), (16, 256, 1024, 1, 1, 0, 6), (16, 1024, 256, 1, 1, 0, 5),
    (16, 1024, 512, 1, 1, 0, 1), (16, 512, 512, 3, 2, 1, 1), (16, 1024, 2048, 1, 2, 0, 1),
    (32, 512, 512, 3, 1, 1, 2), (32, 512, 2048, 1, 1, 0, 3), (32, 2048, 512, 1, 1, 0, 2),
]
CONFIGS = {"b8_224": (8, 224), "b32_64": (32, 64)}
PASSES = ["fwd", "bwd_data", "bwd_weight"]


def shape_name(h, c, k, r, stride):
    return f"{h}x{h}_{c}to{k}_{r}x{r}s{stride}"


def median_time(fn, repeats, clock, sample_seconds=0.05):
    """Median seconds per call over `repeats` samples of enough calls to last sample_seconds."""
    fn()
    start = clock()
    fn()
    calls = max(1, int(sample_seconds / max(clock() - start, 1e-7)))
    samples = []
    for _ in range(repeats):
        start = clock()
        for _ in range(calls):
            fn()
        samples.append((clock() - start) / calls)
    return statistics.median(samples)


def torch_times(n, h, c, k, r, stride, pad, repeats, clock):
    """{pass: (seconds, layout)} for PyTorch's faster layout per pass."""
    p = (h + 2 * pad - r) // stride + 1
    best = {}
    for layout in (torch.channels_last, torch.contiguous_format):
        x = torch.randn(n, c, h, h).contiguous(memory_format=layout)
        w = (0.05 * torch.randn(k, c, r, r)).contiguous(memory_format=layout)
        dy = torch.randn(n, k, p, p).contiguous(memory_format=layout)
        args = ([stride, stride], [pad, pad], [1, 1], False, [0, 0], 1)

        def forward():
            with torch.no_grad():
                torch.nn.functional.conv2d(x, w, None, stride, pad)

        def backward(mask):
            return lambda: torch.ops.aten.convolution_backward(dy, x, w, None, *args, mask)

        fns = {"fwd": forward, "bwd_data": backward([True, False, False]),
               "bwd_weight": backward([False, True, False])}
        name = "channels_last" if layout == torch.channels_last else "nchw"
        for pass_name, fn in fns.items():
            t = median_time(fn, repeats, clock)
            if pass_name not in best or t < best[pass_name][0]:
                best[pass_name] = (t, name)
    return best


def our_times(bench, config, shape, repeats, cpu_time):
    """{pass: seconds}, medians from bench_kernels."""
    cmd = [bench, f"--benchmark_filter=^Conv2d/.*/{config}/{shape}/", f"--benchmark_repetitions={repeats}",
           "--benchmark_report_aggregates_only=true", "--benchmark_format=json", "--benchmark_min_time=0.05"]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    scale = {"ns": 1e-9, "us": 1e-6, "ms": 1e-3, "s": 1.0}
    times = {}
    for b in json.loads(out)["benchmarks"]:
        if b.get("aggregate_name") == "median":
            times[b["run_name"].split("/")[1]] = b["cpu_time" if cpu_time else "real_time"] * scale[b["time_unit"]]
    return times


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bench", help="path to bench_kernels (omit to time PyTorch only)")
    ap.add_argument("--config", choices=sorted(CONFIGS), action="append", help="batch config (default: both)")
    ap.add_argument("--only", action="append", help="shape name(s) to run, e.g. 56x56_64to64_3x3s1")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--cpu-time", action="store_true", help="process CPU time instead of wall-clock (use with --threads 1)")
    a = ap.parse_args()
    clock = time.process_time if a.cpu_time else time.perf_counter
    torch.set_num_threads(a.threads)
    os.environ["OMP_NUM_THREADS"] = str(a.threads)  # for bench_kernels
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, mkldnn {torch.backends.mkldnn.is_available()}")
    print(f"times: median {'CPU' if a.cpu_time else 'wall-clock'} ms per call; "
          "speedup = PyTorch time / ours (above 1: we are faster)\n")
    header = f"{'config':7} {'shape':24} {'uses':>4} {'pass':10} {'ours ms':>9} {'GFLOP/s':>8} {'torch ms':>9} {'layout':13} {'speedup':>7}"
    for config in a.config or sorted(CONFIGS):
        n, image = CONFIGS[config]
        print(header)
        totals = {"ours": {p: 0.0 for p in PASSES}, "torch": {p: 0.0 for p in PASSES}}
        for div, c, k, r, stride, pad, uses in RESNET50_CONVS:
            h = image // div
            shape = shape_name(h, c, k, r, stride)
            if a.only and shape not in a.only:
                continue
            p = (h + 2 * pad - r) // stride + 1
            gflop = 2.0 * n * p * p * k * r * r * c / 1e9
            ours = our_times(a.bench, config, shape, a.repeats, a.cpu_time) if a.bench else {}
            theirs = torch_times(n, h, c, k, r, stride, pad, a.repeats, clock)
            for pass_name in PASSES:
                t_torch, layout = theirs[pass_name]
                t_ours = ours.get(pass_name)
                counted = not (pass_name == "bwd_data" and c == 3)
                if counted:
                    totals["torch"][pass_name] += uses * t_torch
                    totals["ours"][pass_name] += uses * (t_ours or 0.0)
                ours_txt = f"{t_ours * 1e3:9.3f} {gflop / t_ours:8.1f}" if t_ours else f"{'-':>9} {'-':>8}"
                speed = f"{t_torch / t_ours:7.2f}" if t_ours else f"{'-':>7}"
                print(f"{config:7} {shape:24} {uses:4d} {pass_name:10} {ours_txt} {t_torch * 1e3:9.3f} {layout:13} {speed}")
            sys.stdout.flush()
        print(f"\n{config}: ResNet50 convolutions, each shape times its uses (ms per batch)")
        for pass_name in PASSES:
            o, t = totals["ours"][pass_name], totals["torch"][pass_name]
            ratio = f"{t / o:.2f}" if o else "-"
            print(f"  {pass_name:10} ours {o * 1e3:9.2f}  torch {t * 1e3:9.2f}  speedup {ratio}")
        o, t = sum(totals["ours"].values()), sum(totals["torch"].values())
        print(f"  {'all':10} ours {o * 1e3:9.2f}  torch {t * 1e3:9.2f}  speedup {t / o if o else float('nan'):.2f}\n")


if __name__ == "__main__":
    main()
