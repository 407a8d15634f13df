#!/usr/bin/env python3
"""simulate-workers.py - how the wall time of a build's remote part falls with N workers.

Usage: bench/simulate-workers.py EVENTS.json [MAX_N]
EVENTS.json is the `--json` event stream of a real build (`cbuild build --json //...`). Each
cnb_image's detect and build, and each genrule, are the actions a worker runs; a target's detect
precedes its build (a chain), targets are independent once the shared stack and buildpacks exist
(those, and exports, stay local and are not simulated). The chains are list-scheduled on N workers
(longest chain first, each action on the first free worker, one action per worker at a time).
Prints, per N: the simulated makespan, the lower bound max(total / N, longest chain) and the
speed-up over one worker. Python 3 stdlib only.
"""
import json
import sys
from collections import defaultdict


def chains(path):
    per = defaultdict(dict)
    for line in open(path):
        try:
            e = json.loads(line)
        except ValueError:
            continue
        if e.get("type") == "finished" and e.get("outcome") == "executed" and e.get("action") in ("detect", "build", "genrule"):
            per[e["label"]][e["action"]] = e["duration"] / 1000.0
    out = []
    for label, acts in per.items():
        out.append([acts[a] for a in ("detect", "build", "genrule") if a in acts])
    return out


def makespan(cs, n):
    # Event simulation: a chain's next action is ready when its previous one ends.
    cs = sorted(cs, key=lambda c: -sum(c))
    free = [0.0] * n
    ready = [(0.0, i, 0) for i in range(len(cs))]  # (ready time, chain, step)
    end = 0.0
    while ready:
        ready.sort()
        t, i, k = ready.pop(0)
        w = min(range(n), key=lambda j: free[j])
        start = max(t, free[w])
        finish = start + cs[i][k]
        free[w] = finish
        end = max(end, finish)
        if k + 1 < len(cs[i]):
            ready.append((finish, i, k + 1))
    return end


def main():
    path = sys.argv[1]
    max_n = int(sys.argv[2]) if len(sys.argv) > 2 else 8
    cs = chains(path)
    total = sum(sum(c) for c in cs)
    longest = max((sum(c) for c in cs), default=0.0)
    one = makespan(cs, 1) if cs else 0.0
    print(f"{len(cs)} targets, {sum(len(c) for c in cs)} remote actions, {total:.1f} s of action time, longest chain {longest:.1f} s")
    print()
    print("| workers | simulated wall time (remote part) | lower bound max(total/N, longest chain) | speed-up vs 1 |")
    print("|---|---|---|---|")
    for n in range(1, max_n + 1):
        m = makespan(cs, n)
        print(f"| {n} | {m:.1f} s | {max(total / n, longest):.1f} s | {one / m if m else 0:.2f}× |")


if __name__ == "__main__":
    main()
