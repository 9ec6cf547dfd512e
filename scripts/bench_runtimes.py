#!/usr/bin/env python3
"""One peer runtime timed on an ONNX export, as `fingerprintd bench` times ours; run by
scripts/bench-inference.sh, one process per runtime so memory figures do not mix.

  bench_runtimes.py quantize --model model.onnx --out model-int8.onnx
  bench_runtimes.py run --runtime ort|openvino --model model.onnx [--batch 8] [--runs 30]
                        [--precision f32|bf16]   (OpenVINO's INFERENCE_PRECISION_HINT)

`run` prints one JSON object: median and p90 batch-1 latency (ms), images/s at --batch, the
process's resident memory after the runs (bytes; includes Python and the runtime's
libraries), the kernels it ran (OpenVINO: its convolutions' oneDNN primitives, which
ONEDNN_MAX_CPU_ISA in the environment caps; ONNX Runtime: MLAS, which nothing caps), and the
logits of the first input. Inputs are the formula grey scans that
`fingerprintd bench` uses (fingerprint_models::formula::grey_scans: grey levels from
uniform("input", n), copied to three channels and normalised with ImageNet's mean and
standard deviation in f32, as the service's preprocessing does), the same bits, so the logits
compare directly.
"""
import argparse
import json
import os
import statistics
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from make_parity_fixture import uniform  # noqa: E402  (same formula as the Rust side)


IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)


def normalized(levels):
    """Grey levels (batch, size, size) as the service's input: three channels, each
    `v * scale - shift` in f32 (common's ChannelNorm)."""
    scale = np.float32(1.0) / (np.float32(255.0) * IMAGENET_STD)
    shift = IMAGENET_MEAN / IMAGENET_STD
    v = levels.astype(np.float32)[:, None, :, :]
    return v * scale[None, :, None, None] - shift[None, :, None, None]


def formula_inputs(batch, size):
    u = uniform("input", batch * size * size)
    levels = np.floor((u + 1.0) * 128.0).astype(np.uint8).reshape(batch, size, size)
    return normalized(levels)


def rss_bytes():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def quantize(args):
    """Static int8, QDQ, per-channel weights, u8 activations: ONNX Runtime's recommended CPU
    format, which OpenVINO also reads as int8."""
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    import onnx

    size = onnx.load(args.model).graph.input[0].type.tensor_type.shape.dim[2].dim_value
    rng = np.random.default_rng(0)

    class Inputs(CalibrationDataReader):
        def __init__(self):
            batches = [formula_inputs(1, size)]
            batches += [normalized(rng.integers(0, 256, (1, size, size), dtype=np.uint8)) for _ in range(15)]
            self.it = iter({"input": b} for b in batches)

        def get_next(self):
            return next(self.it, None)

    quantize_static(
        args.model,
        args.out,
        Inputs(),
        quant_format=QuantFormat.QDQ,
        per_channel=True,
        activation_type=QuantType.QUInt8,
        weight_type=QuantType.QInt8,
    )


def session(runtime, model, precision=None):
    if runtime == "ort":
        import onnxruntime as ort

        s = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
        name = s.get_inputs()[0].name
        # MLAS picks its kernels from CPUID and has no setting to cap them.
        kernels = "MLAS, the best this CPU has (no cap exists)"
        return lambda x: s.run(["logits"], {name: x})[0], f"ONNX Runtime {ort.__version__}", kernels
    import openvino as ov

    config = {"PERFORMANCE_HINT": "LATENCY"}
    if precision:
        # Without the hint OpenVINO may compute an f32 model in bf16 where the CPU has it.
        config["INFERENCE_PRECISION_HINT"] = precision
    compiled = ov.Core().compile_model(model, "CPU", config)
    request = compiled.create_infer_request()
    logits = compiled.output("logits")

    def run(x):
        return request.infer({0: x})[logits]

    label = f"OpenVINO {ov.__version__}"
    if precision:
        label += f" ({precision} precision)"
    return run, label, convolution_primitives(compiled)


def convolution_primitives(compiled):
    """The oneDNN primitives OpenVINO chose for the convolutions, e.g.
    `brgconv_avx512_amx_1x1_I8 x36, brgconv_avx512_amx_I8 x17`: the ISA it runs, which
    ONEDNN_MAX_CPU_ISA caps (AVX2, AVX2_VNNI, AVX512_CORE_VNNI, ...)."""
    counts = {}
    for op in compiled.get_runtime_model().get_ops():
        info = op.get_rt_info()
        if "layerType" in info and info["layerType"].astype(str) == "Convolution":
            primitive = info["primitiveType"].astype(str)
            counts[primitive] = counts.get(primitive, 0) + 1
    return ", ".join(f"{p} x{n}" for p, n in sorted(counts.items())) or "unknown"


def run(args):
    import onnx

    size = onnx.load(args.model, load_external_data=False).graph.input[0].type.tensor_type.shape.dim[2].dim_value
    start = time.perf_counter()
    infer, name, kernels = session(args.runtime, args.model, args.precision)
    load_seconds = time.perf_counter() - start
    batch = formula_inputs(args.batch, size)
    first = batch[:1]
    logits = np.asarray(infer(first))[0]
    times = []
    for _ in range(max(args.runs, 1)):
        t = time.perf_counter()
        infer(first)
        times.append((time.perf_counter() - t) * 1e3)
    times.sort()
    infer(batch)
    batch_runs = max(args.runs // 4, 2)
    t = time.perf_counter()
    for _ in range(batch_runs):
        infer(batch)
    images_per_second = batch_runs * args.batch / (time.perf_counter() - t)
    print(
        json.dumps(
            {
                "runtime": name,
                "kernels": kernels,
                "isa_cap": os.environ.get("ONEDNN_MAX_CPU_ISA") or None,
                "model": args.model,
                "load_seconds": load_seconds,
                "latency_ms_median": statistics.median(times),
                "latency_ms_p90": times[round((len(times) - 1) * 0.9)],
                "batch": args.batch,
                "images_per_second": images_per_second,
                "rss_bytes": rss_bytes(),
                "logits": [float(v) for v in logits],
            }
        )
    )


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    q = sub.add_parser("quantize")
    q.add_argument("--model", required=True)
    q.add_argument("--out", required=True)
    r = sub.add_parser("run")
    r.add_argument("--runtime", choices=["ort", "openvino"], required=True)
    r.add_argument("--model", required=True)
    r.add_argument("--batch", type=int, default=8)
    r.add_argument("--runs", type=int, default=30)
    r.add_argument("--precision", choices=["f32", "bf16"], help="OpenVINO's inference precision")
    args = p.parse_args()
    quantize(args) if args.command == "quantize" else run(args)


if __name__ == "__main__":
    main()
