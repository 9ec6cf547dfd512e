#!/usr/bin/env python3
"""The open-set split of a real set, as scripts/real-openset.sh and scripts/patches-openset.sh
take it: fingers (FVC/PolyU names, <finger>_<impression>.<ext>) shuffled with seed 0 into
enrolled (half), calibration strangers (a quarter) and test strangers (the rest), each a folder
of symbolic links to the scans (the set is never copied).

Usage: openset_split.py SRC SPLIT  (SPLIT/{enrolled,calibration,strangers} must exist, empty)
"""
import os
import random
import re
import sys

src, split = sys.argv[1], sys.argv[2]
name = re.compile(r"^(?P<id>.+)_(?P<imp>\d+)\.[A-Za-z0-9]+$")
files = {}
for f in sorted(os.listdir(src)):
    m = name.match(f)
    if m:
        files.setdefault(m["id"], []).append(f)
fingers = sorted(files)
random.Random(0).shuffle(fingers)
n = len(fingers)
enrolled, calibration = n // 2, (n - n // 2) // 2
for i, finger in enumerate(fingers):
    part = "enrolled" if i < enrolled else "calibration" if i < enrolled + calibration else "strangers"
    for f in files[finger]:
        os.symlink(os.path.realpath(os.path.join(src, f)), os.path.join(split, part, f))
