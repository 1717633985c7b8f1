#!/usr/bin/env python3
"""mman cache / mman maps against vmtouch, util-linux fincore, procps pmap and pagers.

1. Agreement: on a tree of small files and one big file left in mixed states (some files
   evicted, some read in part), every tool's resident page count; pmap -x totals against
   mman maps for a few processes.
2. Speed: status (hot), touch (cold: after evicting; hot: all resident) and evict, each tool
   in turn, rotated, `--runs` times; medians and ratios to vmtouch from this one run.
"""
import argparse, json, os, random, shutil, statistics, subprocess, sys, time

MMAN = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "target", "release", "mman")
PS = os.sysconf("SC_PAGE_SIZE")


def sh(cmd, **kw):
    return subprocess.run(cmd, check=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw).stdout


def timed(cmd):
    t = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - t


def make_tree(root, files, total_mb):
    marker = os.path.join(root, ".made")
    want = f"{files} {total_mb}"
    if os.path.exists(marker) and open(marker).read() == want:
        return
    shutil.rmtree(root, ignore_errors=True)
    os.makedirs(root)
    rng = random.Random(42)
    mean = total_mb * 1_000_000 / files
    block = os.urandom(1 << 20)
    per_dir = 200
    for i in range(files):
        d = os.path.join(root, f"d{i // per_dir:03d}")
        if i % per_dir == 0:
            os.makedirs(d, exist_ok=True)
        size = min(int(rng.expovariate(1 / mean)), len(block))
        with open(os.path.join(d, f"f{i:05d}"), "wb") as f:
            f.write(block[:size])
    os.sync()
    open(marker, "w").write(want)


def make_big(path, gib):
    if os.path.exists(path) and os.path.getsize(path) == gib << 30:
        return
    block = os.urandom(1 << 20)
    with open(path, "wb") as f:
        for _ in range(gib << 10):
            f.write(block)
        f.flush()
        os.fsync(f.fileno())


def files_of(root):
    out = []
    for d, _, fs in os.walk(root):
        out += [os.path.join(d, f) for f in fs if not f.startswith(".")]
    return out


def mixed_state(paths, big):
    sh([MMAN, "cache", "evict", *paths[:1]])
    subprocess.run([MMAN, "cache", "evict", os.path.dirname(os.path.dirname(paths[0])), big], stdout=subprocess.DEVNULL)
    rng = random.Random(7)
    for p in paths:
        r = rng.random()
        if r < 0.4:
            with open(p, "rb") as f:
                f.read()
        elif r < 0.6:
            with open(p, "rb") as f:
                f.read(max(1, os.path.getsize(p) // 2))
    with open(big, "rb") as f:
        f.seek(1 << 30)
        left = 512 << 20
        while left:
            left -= len(f.read(min(left, 1 << 20)))


def counts(tree, big, paths, pagers):
    res = {}
    for name, target in (("tree", tree), ("big", big)):
        row = {}
        row["mman"] = json.loads(sh([MMAN, "cache", "status", "--json", target]))["resident_pages"]
        if shutil.which("vmtouch"):
            out = sh(["vmtouch", "-m", "64G", target])
            row["vmtouch"] = int(out.split("Resident Pages:")[1].split("/")[0])
        if shutil.which("fincore"):
            targets = paths if name == "tree" else [big]
            total = 0
            for i in range(0, len(targets), 2000):
                out = sh(["fincore", "-n", "-r", "-o", "PAGES", *targets[i:i + 2000]])
                total += sum(int(x) for x in out.split())
            row["fincore"] = total
        if pagers:
            row["pagers"] = json.loads(sh([pagers, "query", "-o", "json", target]))["total_resident_pages"]
        res[name] = row
    return res


def pmap_agreement():
    procs = [subprocess.Popen(["sleep", "30"]), subprocess.Popen([sys.executable, "-c", "import time; x=bytearray(50<<20); time.sleep(30)"])]
    time.sleep(0.5)
    rows = []
    try:
        for p in procs + [None]:
            pid = str(p.pid if p else os.getpid())
            pm = sh(["pmap", "-x", pid]).splitlines()
            tot = [int(x) for x in [l for l in pm if l.startswith("total kB")][0].split()[2:5]]
            mm = json.loads(sh([MMAN, "maps", pid, "--json"]))["total"]
            rows.append({"pid": pid, "pmap_x": tot, "mman": [mm["size_kib"], mm["rss_kib"], mm["dirty_kib"]]})
    finally:
        for p in procs:
            p.kill()
    return rows


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--files", type=int, default=20000)
    ap.add_argument("--total-mb", type=int, default=666)
    ap.add_argument("--big-gib", type=int, default=4)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--dir", default="/work/scratch/cachebench")
    ap.add_argument("--pagers", default="")
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    pagers = a.pagers if a.pagers and os.access(a.pagers, os.X_OK) else None
    tree = os.path.join(a.dir, "tree")
    big = os.path.join(a.dir, "big.bin")
    os.makedirs(a.dir, exist_ok=True)
    print(f"setting up {a.files} files ({a.total_mb} MB) and a {a.big_gib} GiB file in {a.dir}...", file=sys.stderr)
    make_tree(tree, a.files, a.total_mb)
    make_big(big, a.big_gib)
    paths = sorted(files_of(tree))
    mixed_state(paths, big)
    agree = counts(tree, big, paths, pagers)
    maps = pmap_agreement() if shutil.which("pmap") else []

    vm = shutil.which("vmtouch")
    fc = shutil.which("fincore")
    results = {}

    def measure(label, tools, before=None):
        times = {t: [] for t in tools}
        for r in range(a.runs):
            order = list(tools)[r % len(tools):] + list(tools)[:r % len(tools)]
            for t in order:
                if before:
                    before()
                times[t].append(timed(tools[t]))
        results[label] = {t: statistics.median(v) for t, v in times.items()}

    fincore_tree = ["sh", "-c", f"find {tree} -type f ! -name .made -print0 | xargs -0 -n 5000 fincore -n -r -o PAGES"]
    for name, target in (("tree", tree), ("big", big)):
        status = {"mman": [MMAN, "cache", "status", target]}
        if vm:
            status["vmtouch"] = ["vmtouch", "-m", "64G", target]
        if fc:
            status["fincore"] = fincore_tree if name == "tree" else ["fincore", big]
        if pagers:
            status["pagers"] = [pagers, "query", "-o", "kv", target]
        mixed_state(paths, big)
        measure(f"status {name}", status)
        evict_all = lambda: subprocess.run([MMAN, "cache", "evict", target], stdout=subprocess.DEVNULL)
        touch_all = lambda: subprocess.run([MMAN, "cache", "touch", target], stdout=subprocess.DEVNULL)
        touch = {"mman": [MMAN, "cache", "touch", target]}
        evict = {"mman": [MMAN, "cache", "evict", target]}
        if vm:
            touch["vmtouch"] = ["vmtouch", "-t", "-m", "64G", target]
            evict["vmtouch"] = ["vmtouch", "-e", "-m", "64G", target]
        if pagers:
            touch["pagers"] = [pagers, "touch", "-o", "kv", target]
            evict["pagers"] = [pagers, "evict", "-o", "kv", target]
        measure(f"touch cold {name}", touch, before=evict_all)
        measure(f"touch hot {name}", touch, before=touch_all)
        measure(f"evict {name}", evict, before=touch_all)

    if a.json:
        print(json.dumps({"agreement": agree, "pmap": maps, "seconds": results}, indent=2))
        return
    print(f"# {a.files} files, {a.total_mb} MB; one {a.big_gib} GiB file; {a.runs} runs each, medians")
    print("\n## agreement: resident pages in a mixed state")
    for k, row in agree.items():
        same = "all equal" if len(set(row.values())) == 1 else "DIFFER"
        print(f"{k:6} " + "  ".join(f"{t}={v}" for t, v in row.items()) + f"  ({same})")
    for r in maps:
        same = "equal" if r["pmap_x"] == r["mman"] else "DIFFER"
        print(f"maps pid {r['pid']}: pmap -x total (size, rss, dirty) {r['pmap_x']}, mman {r['mman']} ({same})")
    print("\n## seconds (ratio: vmtouch time / tool time, higher is faster)")
    for label, row in results.items():
        base = row.get("vmtouch")
        cells = []
        for t, v in row.items():
            ratio = f" ({base / v:.2f}x)" if base else ""
            cells.append(f"{t} {v:.4f}{ratio}")
        print(f"{label:18} " + "  ".join(cells))


if __name__ == "__main__":
    main()
