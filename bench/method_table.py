#!/usr/bin/env python3
"""Reads RUN_DIR/<method>/metrics.jsonl (written by bench/method.sh) and
prints the Fréchet distance and class accuracy per evaluated step, and the
steps each method needs to reach the distance the first method (plain SiT)
reaches at its last evaluation, with the speed-up ratio.

Steps-to-target interpolates linearly between the two evaluations around
the first crossing (FD is noisy; a later rise above the target again is
ignored). "not reached" means the method never got there in the budget.

usage: method_table.py OUT_DIR sit repa reed
"""
import json
import sys


def evaluations(path):
    rows = {}
    with open(path) as f:
        for line in f:
            m = json.loads(line)
            if m.get("fd_n"):
                rows[m["step"] + 1] = (m["fd"], m["cond_acc"])  # steps done
    return rows


def steps_to(rows, target):
    prev = None
    for step in sorted(rows):
        fd = rows[step][0]
        if fd is not None and fd <= target:
            if prev is None or prev[1] is None:
                return float(step)
            s0, fd0 = prev
            return s0 + (fd0 - target) / (fd0 - fd) * (step - s0)
        prev = (step, fd)
    return None


def main():
    out, methods = sys.argv[1], sys.argv[2:]
    rows = {m: evaluations(f"{out}/{m}/metrics.jsonl") for m in methods}
    steps = sorted(set().union(*rows.values()))
    fmt = lambda v, spec: "—" if v is None else format(v, spec)
    print("Fréchet distance (evaluator features; lower is better) | class accuracy of samples")
    print("| step | " + " | ".join(f"{m} FD" for m in methods) + " | " +
          " | ".join(f"{m} acc" for m in methods) + " |")
    print("|" + "---:|" * (1 + 2 * len(methods)))
    for s in steps:
        fds = [fmt(rows[m].get(s, (None,))[0], ".2f") for m in methods]
        accs = [fmt(rows[m][s][1] * 100 if s in rows[m] else None, ".1f") + "%" for m in methods]
        print(f"| {s} | " + " | ".join(fds) + " | " + " | ".join(accs) + " |")
    base = methods[0]
    last = max(rows[base])
    target = rows[base][last][0]
    print()
    print(f"target: the FD {base} reaches at its last evaluation (step {last}): {target:.2f}")
    print("| method | steps to target | speed-up vs " + base + " |")
    print("|---|---:|---:|")
    for m in methods:
        s = steps_to(rows[m], target)
        if s is None:
            print(f"| {m} | not reached in {max(rows[m])} | < 1 |")
        else:
            print(f"| {m} | {s:.0f} | {last / s:.2f}× |")


if __name__ == "__main__":
    main()
