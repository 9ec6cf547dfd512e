#!/usr/bin/env python3
"""Reference outputs of torchvision's ResNets for the parity tests of `models/`.

Weights and inputs are not stored: both sides compute them from the formula in
`models/src/formula.rs` (FNV-1a name seed, splitmix64 stream). Only the expected numbers are
committed, in models/tests/fixtures/torchvision_parity.json.

Usage (needs torch and torchvision; the tests themselves do not):
    python3 scripts/make_parity_fixture.py > models/tests/fixtures/torchvision_parity.json
    python3 scripts/make_parity_fixture.py --selftest
    python3 scripts/make_parity_fixture.py --pth models/tests/fixtures
"""
import json
import sys

import numpy as np

MASK = (1 << 64) - 1
NUM_CLASSES = 10
INPUT_SHAPE = (2, 3, 64, 64)
TARGETS = [3, 7]
SAMPLES = 64


def fnv1a64(data: bytes) -> int:
    h = 0xCBF29CE484222325
    for b in data:
        h = ((h ^ b) * 0x100000001B3) & MASK
    return h


def uniform(name: str, n: int) -> np.ndarray:
    x = (np.arange(n, dtype=np.uint64) + np.uint64(fnv1a64(name.encode()))) & np.uint64(MASK)
    with np.errstate(over="ignore"):
        z = x + np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z = z ^ (z >> np.uint64(31))
    return 2.0 * (z >> np.uint64(40)).astype(np.float64) / float(1 << 24) - 1.0


def parameter(name: str, shape) -> np.ndarray:
    n = int(np.prod(shape))
    u = uniform(name, n)
    if name.endswith("running_var"):
        scale, offset = 0.25, 0.75
    elif name.endswith("running_mean") or name.endswith("bias"):
        scale, offset = 0.1, 0.0
    elif len(shape) == 1:
        scale, offset = 0.25, 0.5
    else:
        fan_in = int(np.prod(shape[1:]))
        scale, offset = float(np.sqrt(3.0 / fan_in)), 0.0
    return (offset + scale * u).astype(np.float32).reshape(shape)


def sample(t) -> dict:
    flat = t.detach().double().flatten().numpy()
    idx = list(range(flat.size)) if flat.size <= SAMPLES else [i * flat.size // SAMPLES for i in range(SAMPLES)]
    return {
        "numel": int(flat.size),
        "idx": idx,
        "values": [float(flat[i]) for i in idx],
        "norm": float(np.linalg.norm(flat)),
    }


def features(model, x):
    import torch

    x = model.maxpool(model.relu(model.bn1(model.conv1(x))))
    x = model.layer4(model.layer3(model.layer2(model.layer1(x))))
    return torch.flatten(model.avgpool(x), 1)


def reference(arch: str) -> dict:
    import torch
    import torchvision

    torch.manual_seed(0)
    model = getattr(torchvision.models, arch)(num_classes=NUM_CLASSES)
    state = {
        k: torch.from_numpy(parameter(k, tuple(v.shape)))
        for k, v in model.state_dict().items()
        if not k.endswith("num_batches_tracked")
    }
    model.load_state_dict(state, strict=False)
    x = torch.from_numpy(uniform("input", int(np.prod(INPUT_SHAPE))).astype(np.float32).reshape(INPUT_SHAPE))

    out = {}
    model.eval()
    with torch.no_grad():
        feat = features(model, x)
        out["eval"] = {"logits": sample(model.fc(feat)), "features": sample(feat)}

    # Train mode in float64: with batch statistics over a batch of two, the gradient of
    # conv1 is ill-conditioned in float32 (torch's own float32 result differs from its
    # float64 one by about 3%), so float32 would test rounding, not the implementation.
    model.double().train()
    x = x.double()
    feat = features(model, x)
    logits = model.fc(feat)
    loss = torch.nn.functional.cross_entropy(logits, torch.tensor(TARGETS))
    loss.backward()
    last_bn = [k for k in state if k.startswith("layer4") and k.endswith("running_var")][-1]
    out["train"] = {
        "logits": sample(logits),
        "features": sample(feat),
        "loss": loss.item(),
        "grad_fc.weight": sample(model.fc.weight.grad),
        "grad_conv1.weight": sample(model.conv1.weight.grad),
        "bn1.running_mean": sample(model.state_dict()["bn1.running_mean"]),
        last_bn: sample(model.state_dict()[last_bn]),
    }
    return out


def write_pth(folder: str) -> None:
    """Tiny `.pth` files as torch.save writes them: a `module.` prefix, an f16 tensor, a
    transposed (strided) tensor and a num_batches_tracked counter; bare and wrapped."""
    import os

    import torch

    fc = torch.from_numpy(parameter("fc.weight", (2, 3))).t()
    state = {
        "module.conv1.weight": torch.from_numpy(parameter("conv1.weight", (2, 3, 1, 1))),
        "bn1.running_var": torch.from_numpy(parameter("bn1.running_var", (4,))).half(),
        "bn1.num_batches_tracked": torch.tensor(3),
        "fc.weight": fc,
    }
    torch.save(state, os.path.join(folder, "tiny_state_dict.pth"))
    torch.save({"epoch": 3, "state_dict": state}, os.path.join(folder, "tiny_wrapped.pth"))


def main():
    if "--pth" in sys.argv:
        write_pth(sys.argv[sys.argv.index("--pth") + 1])
        return
    if "--selftest" in sys.argv:
        print(hex(fnv1a64(b"input")), [float(v) for v in uniform("input", 3)])
        print(parameter("layer1.0.conv1.weight", (64, 64, 1, 1)).flatten()[:3].tolist())
        return
    import torch
    import torchvision

    doc = {
        "generator": "scripts/make_parity_fixture.py",
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "num_classes": NUM_CLASSES,
        "input_shape": list(INPUT_SHAPE),
        "targets": TARGETS,
        "train_dtype": "float64",
        "archs": {arch: reference(arch) for arch in ["resnet18", "resnet50"]},
    }
    json.dump(doc, sys.stdout, indent=1)
    print()


if __name__ == "__main__":
    main()
