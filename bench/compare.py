"""Reads the JSON that scripts/bench collected (ours from `boneage bench --format json`, the
peers' JSON lines) and prints one markdown table: every number, and our speed-up over each
peer on the same test."""
import json
import pathlib
import sys


def load(folder):
    ours, peers = [], []
    for f in sorted(folder.glob("ours-*.json")):
        ours += json.loads(f.read_text())
    for f in sorted(folder.glob("peer-*.jsonl")):
        peers += [json.loads(line) for line in f.read_text().splitlines() if line.startswith("{")]
    return ours, peers


def our_rows(ours):
    """(impl, test, unit, mean, sd) with the peers' test names."""
    rows = []
    for r in ours:
        if r["test"].startswith("preprocess"):
            test = "preprocess"
        elif r["test"] == "infer":
            test = f"resnet50 infer b{r['batch']}"
        else:
            test = f"resnet50 train b{r['batch']}"
        impl = "boneage-" + ("eager-fp32" if r["precision"] == "eager" else
                             r["precision"] if r["precision"] != "-" else "c++")
        rows.append((impl, test, r["unit"], r["mean"], r["sd"]))
    return rows


def speedup(ours, peer, unit):
    """How many times faster ours is: rates divide one way, times the other."""
    return ours / peer if unit.endswith("/s") else peer / ours


def main():
    folder = pathlib.Path(sys.argv[1])
    ours, peers = load(folder)
    mine = our_rows(ours)
    theirs = [(p["impl"], p["test"], p["unit"], p["mean"], p["sd"]) for p in peers]
    meta = ours[0] if ours else {}
    print("| test | implementation | unit | mean ± sd | boneage best vs this |")
    print("| --- | --- | --- | ---: | ---: |")
    for test in sorted({r[1] for r in mine + theirs}):
        rows = [r for r in mine + theirs if r[1] == test]
        unit = rows[0][2]
        best = None
        for r in mine:
            if r[1] == test and not r[0].startswith("boneage-eager"):
                if best is None or speedup(r[3], best[3], unit) > 1:
                    best = r
        for impl, _, u, mean, sd in rows:
            ratio = f"{speedup(best[3], mean, u):.2f}x" if best and not impl.startswith("boneage") else ""
            print(f"| {test} | {impl} | {u} | {mean:.2f} ± {sd:.2f} | {ratio} |")
    print()
    print(f"build: {meta.get('commit', '?')} | cpu: {meta.get('cpu', '?')} | "
          f"threads: {meta.get('threads', '?')} | best boneage row per test against each peer")


if __name__ == "__main__":
    main()
