#!/usr/bin/python3
"""Writes the framework-parity fixtures that tests/test_parity.cpp compares against.

    /usr/bin/python3 tests/parity/make_fixtures.py OUTDIR

For each detector (resnet50, resnet50_bnn, resnet50_attn_bnn) it builds the PyTorch model of
shared/REFERENCE.md (torchvision resnet50 with random weights; a 2-class linear head, or a
Bayesian linear head, or spatial attention + Bayesian head), gives the batch-norm layers
non-trivial running statistics with a few train-mode forwards, and writes:
  OUTDIR/<variant>.weights.safetensors  the state_dict (torchvision keys and layouts; for
                                        resnet50 via .pth and weights/convert_torchvision.py)
  OUTDIR/<variant>.expected.safetensors inputs (NHWC), Bayesian noise, eval-mode logits at
                                        224x224 and 64x64 (float32), and one train-mode step's
                                        loss, KL term and gradients (OIHW as torch has them) in
                                        float64, and in float32 under the prefix "f32."
The Bayesian noise is drawn here and fed to both sides, so the comparison is exact.
"""
import copy
import os
import subprocess
import sys

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
import torchvision

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(ROOT, "weights"))
import safetensors_io  # noqa: E402

NUM_TRAIN_IMAGES = 1000  # the KL weight is 1 / this, as in the reference recipe


class BayesLinear(nn.Module):
    """bayesian-torch's LinearReparameterization as the reference uses it (prior N(0, 1))."""

    def __init__(self, in_features, out_features, prior_sigma=1.0):
        super().__init__()
        self.prior_sigma = prior_sigma
        self.mu_weight = nn.Parameter(torch.empty(out_features, in_features).normal_(0, 0.1))
        self.rho_weight = nn.Parameter(torch.empty(out_features, in_features).normal_(-3, 0.1))
        self.mu_bias = nn.Parameter(torch.empty(out_features).normal_(0, 0.1))
        self.rho_bias = nn.Parameter(torch.empty(out_features).normal_(-3, 0.1))

    def forward(self, x, eps_w, eps_b):
        w = self.mu_weight + torch.log1p(torch.exp(self.rho_weight)) * eps_w
        b = self.mu_bias + torch.log1p(torch.exp(self.rho_bias)) * eps_b
        return F.linear(x, w, b)

    def kl(self):
        def term(mu, rho):
            sigma = torch.log1p(torch.exp(rho))
            p = self.prior_sigma
            return (torch.log(p / sigma) + (sigma ** 2 + mu ** 2) / (2 * p ** 2) - 0.5).sum()
        return term(self.mu_weight, self.rho_weight) + term(self.mu_bias, self.rho_bias)


class SpatialAttention(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(2, 1, kernel_size=7, padding=3, bias=True)

    def forward(self, x):
        pooled = torch.cat([x.mean(dim=1, keepdim=True), x.max(dim=1, keepdim=True)[0]], dim=1)
        return x * torch.sigmoid(self.conv(pooled))


class Detector(nn.Module):
    def __init__(self, variant):
        super().__init__()
        self.variant = variant
        r = torchvision.models.resnet50()
        for name in ("conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4"):
            setattr(self, name, getattr(r, name))
        if variant == "resnet50_attn_bnn":
            self.attention = SpatialAttention()
        self.fc = nn.Linear(2048, 2) if variant == "resnet50" else BayesLinear(2048, 2)

    def forward(self, x, eps_w=None, eps_b=None):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        if self.variant == "resnet50_attn_bnn":
            x = self.attention(x)
        x = torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)
        return self.fc(x) if self.variant == "resnet50" else self.fc(x, eps_w, eps_b)


def nhwc(t):
    return t.permute(0, 2, 3, 1).contiguous().numpy()


def make(variant, outdir):
    torch.manual_seed({"resnet50": 1, "resnet50_bnn": 2, "resnet50_attn_bnn": 3}[variant])
    model = Detector(variant)
    bayes = variant != "resnet50"
    eps_w, eps_b = torch.randn(2, 2048), torch.randn(2)
    # non-trivial running statistics: a few train-mode forwards (and a nudge to BN affine
    # parameters, which start at exactly 1 and 0)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
        model.train()
        for _ in range(3):
            model(torch.randn(4, 3, 64, 64), eps_w, eps_b)

    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    weights_path = os.path.join(outdir, f"{variant}.weights.safetensors")
    if variant == "resnet50":  # the user's path: a torchvision .pth through the converter
        pth = os.path.join(outdir, "resnet50.pth")
        torch.save(state, pth)
        subprocess.run([sys.executable, os.path.join(ROOT, "weights", "convert_torchvision.py"),
                        pth, weights_path], check=True, stdout=subprocess.DEVNULL)
    else:
        safetensors_io.save(weights_path, {
            k: (v.numpy().astype(np.int64) if k.endswith("num_batches_tracked")
                else v.numpy().astype(np.float32)) for k, v in state.items()})

    expected = {"eps_w": eps_w.numpy(), "eps_b": eps_b.numpy()}
    model.eval()
    with torch.no_grad():
        for size in (224, 64):
            x = torch.randn(2, 3, size, size)
            expected[f"input{size}"] = nhwc(x)
            expected[f"logits_eval{size}"] = model(x, eps_w, eps_b).numpy()

    # One train-mode step: loss = cross-entropy (+ KL / number of training images), in
    # float64 (the reference: a deep train-mode network amplifies float32 rounding, so that
    # PyTorch's own float32 gradients of the first layers differ from float64 by about 1e-2)
    # and in float32 (to know how far PyTorch's float32 result is from that reference).
    x = torch.randn(4, 3, 64, 64)
    labels = torch.tensor([0, 1, 1, 0])
    expected["input_train"] = nhwc(x)
    expected["labels_train"] = labels.numpy().astype(np.int64)
    grads = ["conv1.weight", "layer3.0.bn1.weight", "layer3.5.bn3.bias"]
    grads += ["fc.weight", "fc.bias"] if not bayes else ["fc.mu_weight", "fc.rho_weight",
                                                           "fc.mu_bias", "fc.rho_bias"]
    if variant == "resnet50_attn_bnn":
        grads += ["attention.conv.weight", "attention.conv.bias"]
    # float32 twice: NCHW and channels-last run different oneDNN kernels, whose rounding
    # differs; the spread between them is PyTorch's own float32 noise on this step.
    for dtype, prefix, layout in ((torch.float64, "", torch.contiguous_format),
                                  (torch.float32, "f32.", torch.contiguous_format),
                                  (torch.float32, "f32cl.", torch.channels_last)):
        m = copy.deepcopy(model).to(dtype).to(memory_format=layout)
        m.train()
        logits = m(x.to(dtype).contiguous(memory_format=layout), eps_w.to(dtype), eps_b.to(dtype))
        loss = F.cross_entropy(logits, labels)
        if bayes:
            kl = m.fc.kl()
            expected[prefix + "kl"] = kl.detach().reshape(1).numpy()
            loss = loss + kl / NUM_TRAIN_IMAGES
        loss.backward()
        expected[prefix + "logits_train"] = logits.detach().numpy()
        expected[prefix + "loss_train"] = loss.detach().reshape(1).numpy()
        params = dict(m.named_parameters())
        for name in grads:
            expected[f"{prefix}grad.{name}"] = params[name].grad.contiguous().numpy()
        if not prefix:  # running statistics after the train-mode step
            expected["after.layer3.0.bn1.running_mean"] = m.layer3[0].bn1.running_mean.numpy()
            expected["after.layer3.0.bn1.running_var"] = m.layer3[0].bn1.running_var.numpy()
    safetensors_io.save(os.path.join(outdir, f"{variant}.expected.safetensors"),
                        {k: np.asarray(v) for k, v in expected.items()},
                        {"num_train_images": NUM_TRAIN_IMAGES, "torch": torch.__version__,
                         "torchvision": torchvision.__version__})


def main():
    outdir = sys.argv[1] if len(sys.argv) > 1 else "parity"
    os.makedirs(outdir, exist_ok=True)
    torch.set_num_threads(os.cpu_count() or 1)
    for variant in ("resnet50", "resnet50_bnn", "resnet50_attn_bnn"):
        make(variant, outdir)
    print(f"parity fixtures written to {outdir}")


if __name__ == "__main__":
    main()
