#!/usr/bin/python3
"""Converts a torchvision ResNet50 checkpoint (.pth state_dict) to safetensors.

    /usr/bin/python3 weights/convert_torchvision.py resnet50-0676ba61.pth resnet50.safetensors

The .pth is what torchvision downloads for ResNet50_Weights.IMAGENET1K_V1 (resnet50-0676ba61.pth)
or IMAGENET1K_V2 (resnet50-11ad3fa6.pth) into ~/.cache/torch/hub/checkpoints/. Keys and
layouts are kept exactly as torchvision has them (conv weights OIHW, fc.weight [out, in],
num_batches_tracked int64); the engine converts OIHW to its KRSC layout when it loads the
file, so a timm or Hugging Face resnet50 safetensors file with the same key names loads
directly without this step. A checkpoint wrapped as {"state_dict": ...} or {"model": ...},
or saved from DataParallel ("module." prefixes), is unwrapped. A file that is not a
ResNet50 is refused with the list of what does not match. Needs python3-torch (Debian).
"""
import argparse
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import safetensors_io  # noqa: E402


def resnet50_expected_shapes(num_classes=1000):
    """The state_dict key -> shape of torchvision's resnet50 (25,557,032 parameters)."""
    shapes = {"conv1.weight": (64, 3, 7, 7)}

    def bn(prefix, c):
        for k in ("weight", "bias", "running_mean", "running_var"):
            shapes[f"{prefix}.{k}"] = (c,)
        shapes[f"{prefix}.num_batches_tracked"] = ()

    bn("bn1", 64)
    in_c = 64
    for layer, (width, blocks) in enumerate([(64, 3), (128, 4), (256, 6), (512, 3)], start=1):
        for b in range(blocks):
            p = f"layer{layer}.{b}"
            shapes[f"{p}.conv1.weight"] = (width, in_c, 1, 1)
            bn(f"{p}.bn1", width)
            shapes[f"{p}.conv2.weight"] = (width, width, 3, 3)
            bn(f"{p}.bn2", width)
            shapes[f"{p}.conv3.weight"] = (width * 4, width, 1, 1)
            bn(f"{p}.bn3", width * 4)
            if b == 0:
                shapes[f"{p}.downsample.0.weight"] = (width * 4, in_c, 1, 1)
                bn(f"{p}.downsample.1", width * 4)
            in_c = width * 4
    shapes["fc.weight"] = (num_classes, 2048)
    shapes["fc.bias"] = (num_classes,)
    return shapes


def unwrap(obj):
    for key in ("state_dict", "model", "model_state_dict"):
        if isinstance(obj, dict) and key in obj and isinstance(obj[key], dict):
            obj = obj[key]
    if not isinstance(obj, dict):
        raise SystemExit(f"error: the checkpoint holds a {type(obj).__name__}, not a state_dict")
    return {(k[len("module."):] if k.startswith("module.") else k): v for k, v in obj.items()}


def check_resnet50(state, path):
    """Backbone keys must all be present with torchvision's shapes; the fc head may have any
    number of classes (it is skipped when loading into a 2-class model)."""
    num_classes = state["fc.weight"].shape[0] if "fc.weight" in state else 1000
    expected = resnet50_expected_shapes(num_classes)
    missing = [k for k in expected if k not in state]
    wrong = [f"{k}: {tuple(state[k].shape)}, expected {expected[k]}"
             for k in expected if k in state and tuple(state[k].shape) != expected[k]]
    extra = [k for k in state if k not in expected]
    if missing or wrong:
        lines = [f"error: {path} is not a torchvision ResNet50 checkpoint"]
        if missing:
            lines.append(f"  {len(missing)} missing keys, e.g. " + ", ".join(missing[:5]))
        if wrong:
            lines.append(f"  {len(wrong)} shape mismatches, e.g. " + "; ".join(wrong[:5]))
        if extra:
            lines.append(f"  {len(extra)} unexpected keys, e.g. " + ", ".join(extra[:5]))
        raise SystemExit("\n".join(lines))
    if extra:
        print(f"warning: ignoring {len(extra)} keys that are not part of ResNet50: "
              + ", ".join(extra[:5]), file=sys.stderr)
    return {k: state[k] for k in expected}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoint", help="torchvision .pth state_dict")
    parser.add_argument("output", help="output .safetensors")
    args = parser.parse_args()
    import torch
    try:
        obj = torch.load(args.checkpoint, map_location="cpu")
    except Exception as e:  # noqa: BLE001 -- any unreadable file: say so, with the reason
        raise SystemExit(f"error: cannot read {args.checkpoint} as a PyTorch checkpoint: {e}")
    state = check_resnet50(unwrap(obj), args.checkpoint)
    arrays = {}
    for k, v in state.items():
        a = v.detach().cpu().numpy()
        arrays[k] = a.astype(np.int64) if k.endswith("num_batches_tracked") else a.astype(np.float32)
    n_params = sum(a.size for k, a in arrays.items()
                   if not k.endswith(("running_mean", "running_var", "num_batches_tracked")))
    safetensors_io.save(args.output, arrays, {
        "format": "pt", "architecture": "resnet50", "layout": "torchvision",
        "source": os.path.basename(args.checkpoint)})
    print(f"wrote {args.output}: {len(arrays)} tensors, {n_params:,} parameters")


if __name__ == "__main__":
    main()
