#!/usr/bin/env python3
"""PyTorch/torchvision side of scripts/gpu-check.sh: the figures `trainer bench` measures, for
the same network, batch sizes and input size, so the two can be compared on one machine.

Training step: torchvision ResNet, cross-entropy plus the method's L2 term on the last layer's
weights, Adam (lr 1e-4), train mode. Inference: eval mode, no autograd, f32 and f16 (the f16
copy as .half(); on a CPU f16 is skipped, PyTorch's CPU convolutions have no fast f16 path).
"""
import argparse
import json
import statistics
import time

import torch
import torchvision


def timed(iters, sync, fn):
    """Median seconds of `iters` runs after one warm-up, as trainer bench measures."""
    fn()
    sync()
    times = []
    for _ in range(max(iters, 1)):
        start = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main():
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--arch", default="resnet50")
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--batch", type=int, default=24)
    p.add_argument("--infer-batch", type=int, default=1)
    p.add_argument("--classes", type=int, default=148)
    p.add_argument("--iters", type=int, default=3)
    p.add_argument("--device", default="cpu")
    p.add_argument("--json")
    a = p.parse_args()

    device = torch.device(a.device)
    torch.manual_seed(0)
    if device.type == "cuda":
        sync = torch.cuda.synchronize
        name = torch.cuda.get_device_name(device)
    else:
        sync = lambda: None  # noqa: E731
        name = "cpu"
    model = getattr(torchvision.models, a.arch)(num_classes=a.classes).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    x = torch.rand(a.batch, 3, a.size, a.size, device=device)
    y = torch.arange(a.batch, device=device) % a.classes

    def step():
        opt.zero_grad(set_to_none=True)
        logits = model(x)
        loss = torch.nn.functional.cross_entropy(logits, y) + 1e-3 * model.fc.weight.pow(2).sum()
        loss.backward()
        opt.step()

    model.train()
    train_s = timed(a.iters, sync, step)

    model.eval()
    xi = torch.rand(a.infer_batch, 3, a.size, a.size, device=device)
    with torch.no_grad():
        infer_s = timed(a.iters, sync, lambda: model(xi))
        infer_f16 = None
        if device.type == "cuda":
            half = model.half()
            xh = xi.half()
            infer_f16 = a.infer_batch / timed(a.iters, sync, lambda: half(xh))

    report = {
        "runtime": f"PyTorch {torch.__version__}, torchvision {torchvision.__version__}",
        "device_name": name,
        "arch": a.arch,
        "size": a.size,
        "train_batch": a.batch,
        "train_images_per_s": a.batch / train_s,
        "train_step_s": train_s,
        "infer_batch": a.infer_batch,
        "infer_f32_images_per_s": a.infer_batch / infer_s,
        "infer_f16_images_per_s": infer_f16,
    }
    print(json.dumps(report, indent=2))
    if a.json:
        with open(a.json, "w") as f:
            json.dump(report, f, indent=2)


if __name__ == "__main__":
    main()
