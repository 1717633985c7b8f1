#!/usr/bin/env python3
"""mman cat side by side with GNU cat and uutils cat, in one run, ratios printed.

One file (random bytes, warm in the page cache), every contender run R times in
round-robin order (so the machine's noise falls on all alike), into a pipe read by
`cat > /dev/null` and into a regular file. Reports the median wall time, GiB/s, the
producer's CPU seconds per GiB (user + system, from wait4), and throughput ratios against
GNU cat and uutils cat. Each contender's output is checked against the input once.

usage: bench/cat.py [--size-mib N] [--runs R] [--mman PATH] [--uu PATH] [--json]
"""
import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

GIB = float(1 << 30)


def run_into_pipe(cmd):
    """Run cmd > pipe | cat > /dev/null; wall time of the pipeline, CPU of cmd."""
    t0 = time.perf_counter()
    reader = subprocess.Popen(["cat"], stdin=subprocess.PIPE, stdout=subprocess.DEVNULL)
    prod = subprocess.Popen(cmd, stdout=reader.stdin)
    reader.stdin.close()
    _, status, ru = os.wait4(prod.pid, 0)
    reader.wait()
    wall = time.perf_counter() - t0
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"{cmd} failed: {status}")
    return wall, ru.ru_utime + ru.ru_stime


def run_into_file(cmd, out_path):
    # Flush the previous run's dirty pages first, so no run pays for another's writeback.
    os.sync()
    with open(out_path, "wb") as out:
        t0 = time.perf_counter()
        prod = subprocess.Popen(cmd, stdout=out)
        _, status, ru = os.wait4(prod.pid, 0)
        wall = time.perf_counter() - t0
    os.unlink(out_path)
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"{cmd} failed: {status}")
    return wall, ru.ru_utime + ru.ru_stime


def same_output(cmd, src, work):
    out = os.path.join(work, "check")
    with open(out, "wb") as f:
        subprocess.run(cmd, stdout=f, check=True)
    ok = subprocess.run(["cmp", "-s", src, out]).returncode == 0
    os.unlink(out)
    return ok


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--size-mib", type=int, default=1024)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--mman", default="target/release/mman")
    ap.add_argument("--uu", default=os.environ.get("UU_CAT", "/work/scratch/uu/bin/cat"))
    ap.add_argument("--dir", default=None, help="where the test file lives (default: a temp dir)")
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    if not os.access(a.mman, os.X_OK):
        sys.exit(f"no mman binary at {a.mman}: run cargo build --release first")

    contenders = [("mman cat (auto)", [a.mman, "cat"])]
    for via in ["splice", "vmsplice", "map", "read"]:
        contenders.append((f"mman cat --via {via}", [a.mman, "cat", "--via", via]))
    contenders.append(("GNU cat", [shutil.which("cat")]))
    if os.access(a.uu, os.X_OK):
        contenders.append(("uutils cat", [a.uu]))
    else:
        print(f"(uutils cat not found at {a.uu}: install it with "
              f"`cargo install uu_cat --root /work/scratch/uu`; skipped)", file=sys.stderr)

    work = tempfile.mkdtemp(prefix="mman-bench-cat", dir=a.dir)
    try:
        src = os.path.join(work, "input")
        with open(src, "wb") as f:
            block = os.urandom(1 << 20)
            for _ in range(a.size_mib):
                f.write(block)
        subprocess.run(["cat", src], stdout=subprocess.DEVNULL, check=True)  # warm
        gib = a.size_mib / 1024.0

        bad = [n for n, c in contenders if not same_output(c + [src], src, work)]
        for n in bad:
            print(f"FAIL: {n} output differs from its input", file=sys.stderr)

        results = {}
        for dest in ["pipe", "file"]:
            samples = {n: [] for n, _ in contenders}
            for r in range(a.runs):
                # Rotate the order every round: whoever runs after a big write pays for its
                # deferred work, so nobody should always follow the same contender.
                k = r % len(contenders)
                for n, c in contenders[k:] + contenders[:k]:
                    if dest == "pipe":
                        samples[n].append(run_into_pipe(c + [src]))
                    else:
                        samples[n].append(run_into_file(c + [src], os.path.join(work, "out")))
            results[dest] = {
                n: {
                    "median_s": statistics.median(w for w, _ in s),
                    "cpu_s_per_gib": statistics.median(cpu for _, cpu in s) / gib,
                }
                for n, s in samples.items()
            }
        for dest, res in results.items():
            gnu = res["GNU cat"]["median_s"]
            uu = res.get("uutils cat", {}).get("median_s")
            for r in res.values():
                r["gib_per_s"] = gib / r["median_s"]
                r["vs_gnu"] = gnu / r["median_s"]
                r["vs_uutils"] = (uu / r["median_s"]) if uu else None
        if a.json:
            print(json.dumps({"size_mib": a.size_mib, "runs": a.runs, "results": results}, indent=1))
            return 1 if bad else 0
        print(f"{a.size_mib} MiB file, warm page cache, {a.runs} runs each, round-robin, order rotated; medians")
        for dest, res in results.items():
            where = "into a pipe read by `cat > /dev/null`" if dest == "pipe" else "into a regular file"
            print(f"\n{where}:")
            print(f"  {'contender':<24} {'seconds':>8} {'GiB/s':>7} {'CPU s/GiB':>10} {'x GNU':>7} {'x uutils':>9}")
            for n, r in res.items():
                vu = f"{r['vs_uutils']:.2f}" if r["vs_uutils"] else "-"
                print(f"  {n:<24} {r['median_s']:>8.3f} {r['gib_per_s']:>7.2f} "
                      f"{r['cpu_s_per_gib']:>10.3f} {r['vs_gnu']:>7.2f} {vu:>9}")
        return 1 if bad else 0
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
