#!/usr/bin/env python3
"""Open-set figures of a classical minutiae matcher (NIST mindtct + bozorth3, from PyPI's
nbis-py 0.1.3) on the same protocol as `trainer eval --open-set`, so the two can be compared.

Protocol (as trainer/src/openset.rs): each finger of --enroll is enrolled from its first
--enroll-impressions scans (by file name); its other scans are genuine probes; every scan of
--strangers is a never-enrolled probe. A probe's score for an identity is the best bozorth3
score over that identity's templates. Rank-1 over genuine probes; verification EER and FNMR at
FMR 1% / 0.1% over mated (probe, own identity) and non-mated (probe, other identity) scores;
open-set true accepts and false accepts at a threshold calibrated, as the trainer calibrates
its own, for --target-far on other fingers: --calibrate-enroll's fingers enrolled, the scans of
--calibrate-impostors offered. Prints one JSON object.

Usage: minutiae_baseline.py --enroll DB3_B --strangers DB4_B \
           --calibrate-enroll DB1_B --calibrate-impostors DB2_B
       minutiae_baseline.py --enroll DB3_B --strangers DB4_B --threshold 46
"""

import argparse
import json
import re
import sys
from pathlib import Path

import nbis

NAME = re.compile(r"^(?P<id>.+)_(?P<imp>\d+)\.[A-Za-z0-9]+$")


def fingers(root):
    """{finger: [paths sorted by impression]} of an FVC/PolyU-named folder."""
    found = {}
    for path in sorted(Path(root).iterdir()):
        m = NAME.match(path.name)
        if m and path.suffix.lower() in {".tif", ".tiff", ".png", ".bmp", ".jpg", ".pgm"}:
            found.setdefault(m["id"], []).append((int(m["imp"]), path))
    return {k: [p for _, p in sorted(v)] for k, v in found.items()}


class Matcher:
    def __init__(self):
        settings = nbis.NbisExtractorSettings(
            min_quality=0.0, get_center=False, check_fingerprint=False,
            compute_nfiq2=False, ppi=500.0)
        self.extractor = nbis.new_nbis_extractor(settings)
        self.cache = {}

    def minutiae(self, path):
        if path not in self.cache:
            self.cache[path] = self.extractor.extract_minutiae_from_image_file(str(path))
        return self.cache[path]

    def score(self, probe, template):
        return float(self.minutiae(probe).compare(self.minutiae(template)))


def gallery_of(root, k):
    enrolled, probes = {}, []
    for finger, paths in fingers(root).items():
        enrolled[finger] = paths[:k]
        probes += [(p, finger) for p in paths[k:]]
    return enrolled, probes


def rank(matcher, gallery, probe):
    return sorted(((max(matcher.score(probe, t) for t in templates), who)
                   for who, templates in gallery.items()), reverse=True)


def threshold_for_far(impostor_best, target):
    ordered = sorted(impostor_best, reverse=True)
    allowed = int(target * len(ordered))
    # Accept only what is strictly above the first impostor that must be refused.
    return ordered[allowed] + 1e-6 if allowed < len(ordered) else float("-inf")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--enroll", required=True)
    ap.add_argument("--strangers", required=True)
    ap.add_argument("--calibrate-enroll")
    ap.add_argument("--calibrate-impostors")
    ap.add_argument("--threshold", type=float,
                    help="a fixed bozorth3 threshold instead of calibrating one")
    ap.add_argument("--enroll-impressions", type=int, default=3)
    ap.add_argument("--target-far", type=float, default=0.001)
    args = ap.parse_args()
    matcher = Matcher()

    if args.threshold is not None:
        threshold = args.threshold
    elif args.calibrate_enroll and args.calibrate_impostors:
        cal_gallery, _ = gallery_of(args.calibrate_enroll, args.enroll_impressions)
        cal_impostors = [p for paths in fingers(args.calibrate_impostors).values() for p in paths]
        threshold = threshold_for_far(
            [rank(matcher, cal_gallery, p)[0][0] for p in cal_impostors], args.target_far)
    else:
        ap.error("give --threshold, or --calibrate-enroll and --calibrate-impostors")

    gallery, genuine = gallery_of(args.enroll, args.enroll_impressions)
    strangers = [p for paths in fingers(args.strangers).values() for p in paths]
    mated, non_mated, right, accepted, wrong, false_accepts = [], [], 0, 0, 0, 0
    for probe, own in [(p, o) for p, o in genuine] + [(p, None) for p in strangers]:
        ranked = rank(matcher, gallery, probe)
        for score, who in ranked:
            (mated if who == own else non_mated).append(score)
        best, who = ranked[0]
        if own is None:
            false_accepts += best >= threshold
        else:
            right += who == own
            accepted += who == own and best >= threshold
            wrong += who != own and best >= threshold

    def fnmr_at(fmr):
        t = threshold_for_far(non_mated, fmr)
        return sum(s < t for s in mated) / len(mated)

    eer, gap = 1.0, float("inf")
    for t in sorted(set(mated + non_mated)):
        a = sum(s >= t for s in non_mated) / len(non_mated)
        b = sum(s < t for s in mated) / len(mated)
        if abs(a - b) < gap:
            gap, eer = abs(a - b), (a + b) / 2
    json.dump({
        "matcher": "mindtct + bozorth3 (nbis-py 0.1.3)",
        "enrolled_identities": len(gallery),
        "genuine_probes": len(genuine),
        "impostor_probes": len(strangers),
        "rank1": right / len(genuine),
        "eer": eer,
        "fnmr_at_fmr_1pct": fnmr_at(0.01),
        "fnmr_at_fmr_0_1pct": fnmr_at(0.001),
        "threshold": threshold,
        "true_accept_rate": accepted / len(genuine),
        "misidentification_rate": wrong / len(genuine),
        "false_accepts": false_accepts,
        "false_accept_rate": false_accepts / len(strangers),
    }, sys.stdout, indent=1)
    print()


if __name__ == "__main__":
    main()
