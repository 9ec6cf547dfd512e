#!/usr/bin/env python3
"""Checks that the CPU engine's SIMD kernels keep their accumulators in registers.

    scripts/kernel-loops-check.py target/release/fingerprintd

Disassembles the binary (objdump) and, in each x86-64 kernel of `models/src/fast/`, finds the
loops (a branch back to an earlier address) that multiply (vfmadd231ps, vpdpbusd, vpmaddubsw)
and fails if any of them reads or writes a vector register on the stack (kernels whose tiles
fit in the registers: see KERNEL). Whether the compiler keeps a kernel's 24 accumulators in
registers has depended on the build (its flags, the features of the crates built with it,
changes elsewhere in the crate): where it did not, it stored them all to the stack at every
step and ResNet-50 f32 took 52 ms a picture instead of 29. No test sees that; this does, in a
second. Exit status 1 names the loops.
"""
import re
import subprocess
import sys

# The kernels whose tiles fit their registers: f32 on AVX2 (12 accumulators, 2 panel values
# and a broadcast of 16 registers), f32 and int8 on AVX-512 (24 + 4 + 1 of 32), int8 on
# AVX-VNNI (12 + 2 + 1 of 16). (The AVX2 int8 kernel's tile does not fit without VNNI: it
# moves a few values through the stack in every build, by design.)
KERNEL = re.compile(
    r"fingerprint_models::fast::(matmul::(avx2|avx512)::kernel|int8::vnni::kernel_(256|512))$"
)
MULTIPLY = re.compile(r"\b(vfmadd231ps|vpdpbusd|vpmaddubsw)\b")
STACK_VECTOR = re.compile(r"%[xyz]mm\d+.*\(%rsp\)|\(%rsp[^)]*\).*%[xyz]mm\d+")
BRANCH = re.compile(r"\bj[a-z]+\s+([0-9a-f]+)\s+<")


def functions(binary):
    out = subprocess.run(
        ["objdump", "-d", "--no-show-raw-insn", "-C", binary],
        check=True, capture_output=True, text=True,
    ).stdout
    name, body = None, []
    for line in out.splitlines():
        head = re.match(r"^([0-9a-f]+) <(.*)>:$", line)
        if head:
            if name:
                yield name, body
            name, body = head.group(2), []
            continue
        ins = re.match(r"^\s+([0-9a-f]+):\s+(.*)$", line)
        if ins:
            body.append((int(ins.group(1), 16), ins.group(2)))
    if name:
        yield name, body


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    kernels, loops, bad = 0, 0, []
    for name, body in functions(sys.argv[1]):
        if not KERNEL.search(name):
            continue
        kernels += 1
        for i, (address, text) in enumerate(body):
            branch = BRANCH.search(text)
            if not branch or int(branch.group(1), 16) >= address:
                continue
            target = int(branch.group(1), 16)
            loop = [t for a, t in body[: i + 1] if a >= target]
            if not any(MULTIPLY.search(t) for t in loop):
                continue
            loops += 1
            spills = [t for t in loop if STACK_VECTOR.search(t)]
            if spills:
                bad.append((name, target, address, len(spills), spills[0]))
    if kernels == 0:
        sys.exit(f"kernel-loops-check: no engine kernels found in {sys.argv[1]}")
    for name, start, end, count, first in bad:
        print(f"{name}: loop {start:#x}-{end:#x} moves {count} vector values through the "
              f"stack (first: {first})")
    print(f"kernel-loops-check: {kernels} kernels, {loops} multiplying loops, "
          f"{len(bad)} with vector values on the stack")
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
