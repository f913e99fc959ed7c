#!/usr/bin/python3
"""The project's training recipe in PyTorch, for a side-by-side comparison with `trainer`.

    /usr/bin/python3 bench/torch_train.py --data DIR --model resnet50_bnn --image-size 32 \
        --epochs 10 --out torch_results.json

Same recipe as `trainer` and shared/REFERENCE.md: torchvision resnet50 from random weights
(no ImageNet weights are assumed), a 2-class head (linear, or bayesian-torch's
LinearReparameterization, or spatial attention + that), Adam lr 1e-3, batch 32, cross-entropy
plus KL / (number of training images) for the Bayesian heads; images resized to the square
size with PIL bilinear, random horizontal flip in training only, ImageNet normalisation.
Labels: real (folder nature or real) = 0, AI (folder ai or fake) = 1 -- not ImageFolder's
alphabetical order, which swaps them (the reference's bug). Evaluation on DIR/val: the mean
of --mc-samples head samples for the Bayesian variants (the backbone runs once per image),
accuracy, per-class precision/recall, ROC AUC, NLL, Brier and ECE with 15 bins, computed as
models/metrics.cpp does. Training speed: images/s of each epoch's training loop (loading
included, evaluation excluded). Writes one JSON file.
"""
import argparse
import json
import os
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "tests", "parity"))
from make_fixtures import Detector  # noqa: E402  (the parity tests' PyTorch detectors)

CLASS_OF_FOLDER = {"nature": 0, "real": 0, "ai": 1, "fake": 1}
EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp")
MEAN = np.array([0.485, 0.456, 0.406], np.float32)
STD = np.array([0.229, 0.224, 0.225], np.float32)


class Folder(torch.utils.data.Dataset):
    def __init__(self, root, size, train):
        self.items, self.size, self.train = [], size, train
        for folder, label in CLASS_OF_FOLDER.items():
            d = os.path.join(root, folder)
            if os.path.isdir(d):
                self.items += [(os.path.join(d, f), label) for f in sorted(os.listdir(d))
                               if f.lower().endswith(EXTENSIONS) and not f.startswith(".")]
        if not self.items:
            raise SystemExit(f"no images under {root}/{{nature,real,ai,fake}}")

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        path, label = self.items[i]
        img = Image.open(path).convert("RGB")
        if img.size != (self.size, self.size):
            img = img.resize((self.size, self.size), Image.BILINEAR)
        a = np.asarray(img, np.float32) / 255.0
        if self.train and torch.rand(()) < 0.5:
            a = a[:, ::-1]
        a = (a - MEAN) / STD
        return torch.from_numpy(np.ascontiguousarray(a.transpose(2, 0, 1))), label


def bayesian(variant):
    return variant != "resnet50"


def forward_train(model, x):
    if not bayesian(model.variant):
        return model(x)
    fc = model.fc
    return model(x, torch.randn_like(fc.mu_weight), torch.randn_like(fc.mu_bias))


def features(model, x):
    x = model.maxpool(model.relu(model.bn1(model.conv1(x))))
    x = model.layer4(model.layer3(model.layer2(model.layer1(x))))
    if model.variant == "resnet50_attn_bnn":
        x = model.attention(x)
    return torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)


@torch.no_grad()
def predict_p_ai(model, loader, mc_samples):
    model.eval()
    out, labels = [], []
    for x, y in loader:
        f = features(model, x.contiguous(memory_format=torch.channels_last))
        if bayesian(model.variant):
            fc = model.fc
            p = torch.zeros(f.shape[0])
            for _ in range(mc_samples):
                w = fc.mu_weight + torch.log1p(torch.exp(fc.rho_weight)) * torch.randn_like(fc.mu_weight)
                b = fc.mu_bias + torch.log1p(torch.exp(fc.rho_bias)) * torch.randn_like(fc.mu_bias)
                p += torch.softmax(F.linear(f, w, b), dim=1)[:, 1]
            p /= mc_samples
        else:
            p = torch.softmax(model.fc(f), dim=1)[:, 1]
        out.append(p.double().numpy())
        labels.append(y.numpy())
    return np.concatenate(out), np.concatenate(labels)


def roc_auc(p, y):
    # Mann-Whitney U with average ranks for ties
    order = np.argsort(p, kind="mergesort")
    ranks = np.empty(len(p))
    sp = p[order]
    i = 0
    while i < len(p):
        j = i
        while j + 1 < len(p) and sp[j + 1] == sp[i]:
            j += 1
        ranks[order[i:j + 1]] = (i + j) / 2 + 1
        i = j + 1
    pos, neg = (y == 1).sum(), (y == 0).sum()
    return float((ranks[y == 1].sum() - pos * (pos + 1) / 2) / (pos * neg))


def metrics(p, y, bins=15):
    pred = (p >= 0.5).astype(int)
    m = {"count": int(len(y)), "accuracy": float((pred == y).mean())}
    for c, name in ((0, "real"), (1, "ai")):
        tp = int(((pred == c) & (y == c)).sum())
        m[f"recall_{name}"] = tp / max(int((y == c).sum()), 1)
        m[f"precision_{name}"] = tp / max(int((pred == c).sum()), 1)
    m["roc_auc"] = roc_auc(p, y)
    q = np.clip(np.where(y == 1, p, 1 - p), 1e-12, 1)
    m["nll"] = float(-np.log(q).mean())
    m["brier"] = float(((p - y) ** 2).mean())
    conf = np.maximum(p, 1 - p)
    correct = (pred == y).astype(float)
    ece = 0.0
    for b in range(bins):
        lo, hi = b / bins, (b + 1) / bins
        sel = (conf > lo) & (conf <= hi) if b else (conf >= lo) & (conf <= hi)
        if sel.any():
            ece += sel.mean() * abs(correct[sel].mean() - conf[sel].mean())
    m["ece"] = float(ece)
    return m


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True)
    ap.add_argument("--model", default="resnet50", choices=["resnet50", "resnet50_bnn", "resnet50_attn_bnn"])
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--image-size", type=int, default=224)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--mc-samples", type=int, default=50)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", required=True, help="JSON file to write")
    a = ap.parse_args()

    torch.manual_seed(a.seed)
    torch.set_num_threads(a.threads)
    train = Folder(os.path.join(a.data, "train"), a.image_size, True)
    val = Folder(os.path.join(a.data, "val"), a.image_size, False)
    mk = lambda ds, shuffle: torch.utils.data.DataLoader(  # noqa: E731
        ds, batch_size=a.batch_size, shuffle=shuffle, num_workers=a.workers, drop_last=False)
    train_loader, val_loader = mk(train, True), mk(val, False)

    model = Detector(a.model).to(memory_format=torch.channels_last)
    opt = torch.optim.Adam(model.parameters(), lr=a.lr)
    kl_weight = 1.0 / len(train)
    epochs = []
    for epoch in range(a.epochs):
        model.train()
        start, seen, loss_sum, correct = time.perf_counter(), 0, 0.0, 0
        for x, y in train_loader:
            logits = forward_train(model, x.contiguous(memory_format=torch.channels_last))
            loss = F.cross_entropy(logits, y)
            if bayesian(a.model):
                loss = loss + kl_weight * model.fc.kl()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            seen += len(y)
            loss_sum += loss.item() * len(y)
            correct += int((logits.argmax(1) == y).sum())
        seconds = time.perf_counter() - start
        epochs.append({"epoch": epoch + 1, "train_loss": loss_sum / seen, "train_accuracy": correct / seen,
                       "images_per_second": seen / seconds, "seconds": seconds})
        print(f"epoch {epoch + 1}/{a.epochs}: loss {loss_sum / seen:.4f}, train acc {correct / seen:.4f}, "
              f"{seen / seconds:.1f} img/s", file=sys.stderr, flush=True)
    start = time.perf_counter()
    p, y = predict_p_ai(model, val_loader, a.mc_samples)
    result = {"framework": f"pytorch {torch.__version__}", "config": vars(a), "epochs": epochs,
              "evaluation": metrics(p, y), "eval_seconds": time.perf_counter() - start,
              "median_train_images_per_second": float(np.median([e["images_per_second"] for e in epochs]))}
    with open(a.out, "w") as f:
        json.dump(result, f, indent=1)
    print(json.dumps(result["evaluation"]), file=sys.stderr)


if __name__ == "__main__":
    main()
