"""Speed of the CDDFuse metric set (EN, SD, SF, MI, SCD, VIF, Qabf, SSIM) on the 42 TNO pairs:
fusecli (torch; one image at a time on the CPU, batched by image size on a GPU) against a straightforward per-image numpy/scipy
implementation of the same definitions, written here the way CDDFuse's Python Evaluator does it
(``scipy.signal.convolve2d`` windows, a contingency-table MI, ``uniform_filter`` SSIM).

    OMP_NUM_THREADS=1 python benchmarks/bench_metrics.py                      # stand-in fused images
    MALLOC_MMAP_THRESHOLD_=1000000000 MALLOC_TRIM_THRESHOLD_=1000000000 \
        OMP_NUM_THREADS=1 python benchmarks/bench_metrics.py                  # glibc keeps freed memory
    OMP_NUM_THREADS=1 python benchmarks/bench_metrics.py --fused DIR          # real fused images
    python benchmarks/bench_metrics.py --device cuda
    OMP_NUM_THREADS=1 python benchmarks/bench_metrics.py --slow-only       # FMI ×4 and Q_P only

It then times the slow windowed metrics one by one — FMI (edge, pixel, dct, gradient features) and
Q_P — on 640×480 crops (the centre of every TNO pair at least that large; ``--slow N`` pairs,
default 3) and prints milliseconds per image for each.

Without --fused, the stand-in fused image of each pair is round((IR + VIS) / 2). Images are
decoded once before timing (both sides get the same float arrays); the timings cover the metric
computations only. The script also prints the largest relative difference between the two
implementations per metric (a check of the library on real image pairs).
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import sys
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch
from scipy.ndimage import uniform_filter
from scipy.signal import convolve2d

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from fusecli.metrics import evaluate  # noqa: E402
from fusecli.metrics.report import load_gray  # noqa: E402
from fusecli.pairs import scan_pairs  # noqa: E402

NAMES = ["EN", "SD", "SF", "MI", "SCD", "VIF", "Qabf", "SSIM"]

# ------------------------------------------------------------------ baseline (Evaluator style)


def b_en(f):
    h = np.bincount(np.uint8(np.round(f)).ravel(), minlength=256) / f.size
    return float(-np.sum(h * np.log2(h + (h == 0))))


def b_sd(f):
    return float(np.std(f))


def b_sf(f):
    return float(np.sqrt(np.mean((f[:, 1:] - f[:, :-1]) ** 2) + np.mean((f[1:, :] - f[:-1, :]) ** 2)))


def b_mi_one(x, y):  # plug-in MI from a contingency table of the exact values, nats
    _, xi = np.unique(x.ravel(), return_inverse=True)
    _, yi = np.unique(y.ravel(), return_inverse=True)
    c = np.zeros((xi.max() + 1, yi.max() + 1))
    np.add.at(c, (xi, yi), 1)
    p = c / c.sum()
    px, py = p.sum(1, keepdims=True), p.sum(0, keepdims=True)
    nz = p > 0
    return float((p[nz] * np.log(p[nz] / (px @ py)[nz])).sum())


def b_mi(f, a, b):
    return b_mi_one(f, a) + b_mi_one(f, b)


def b_corr(x, y):
    x = x - x.mean()
    y = y - y.mean()
    return np.sum(x * y) / np.sqrt(np.sum(x * x) * np.sum(y * y))


def b_scd(f, a, b):
    return float(b_corr(a, f - b) + b_corr(b, f - a))


def _gauss(n, sd):
    r = (n - 1) / 2
    y, x = np.ogrid[-r:r + 1, -r:r + 1]
    h = np.exp(-(x * x + y * y) / (2 * sd * sd))
    return h / h.sum()


def b_vifp(ref, dist):
    num = den = 0.0
    for scale in range(1, 5):
        n = 2 ** (5 - scale) + 1
        win = np.rot90(_gauss(n, n / 5), 2)
        if scale > 1:
            ref = convolve2d(ref, win, mode="valid")[::2, ::2]
            dist = convolve2d(dist, win, mode="valid")[::2, ::2]
        mu1, mu2 = convolve2d(ref, win, mode="valid"), convolve2d(dist, win, mode="valid")
        s1 = np.maximum(convolve2d(ref * ref, win, mode="valid") - mu1 * mu1, 0)
        s2 = np.maximum(convolve2d(dist * dist, win, mode="valid") - mu2 * mu2, 0)
        s12 = convolve2d(ref * dist, win, mode="valid") - mu1 * mu2
        g = s12 / (s1 + 1e-10)
        sv = s2 - g * s12
        m = s1 < 1e-10
        g[m], sv[m], s1[m] = 0, s2[m], 0
        m = s2 < 1e-10
        g[m], sv[m] = 0, 0
        m = g < 0
        sv[m], g[m] = s2[m], 0
        sv[sv <= 1e-10] = 1e-10
        num += np.sum(np.log10(1 + g * g * s1 / (sv + 2)))
        den += np.sum(np.log10(1 + s1 / 2))
    v = num / den
    return 1.0 if np.isnan(v) else v


def b_vif(f, a, b):
    return float(b_vifp(a, f) + b_vifp(b, f))


def _qgrad(x):
    gx = convolve2d(x, np.array([[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]], float), mode="same")
    gy = convolve2d(x, np.array([[1, 2, 1], [0, 0, 0], [-1, -2, -1]], float), mode="same")
    g = np.sqrt(gx * gx + gy * gy)
    al = np.full_like(x, math.pi / 2)
    nz = gx != 0
    al[nz] = np.arctan(gy[nz] / gx[nz])
    return g, al


def _qaf(ga, aa, gf, af):
    G = np.where(ga > gf, gf / np.where(ga > gf, ga, 1), np.where(ga < gf, ga / np.where(ga < gf, gf, 1), gf))
    A = 1 - np.abs(aa - af) / (math.pi / 2)
    return 0.9994 / (1 + np.exp(-15 * (G - 0.5))) * 0.9879 / (1 + np.exp(-22 * (A - 0.8)))


def b_qabf(f, a, b):
    (ga, aa), (gb, ab), (gf, af) = _qgrad(a), _qgrad(b), _qgrad(f)
    return float(np.sum(_qaf(ga, aa, gf, af) * ga + _qaf(gb, ab, gf, af) * gb) / np.sum(ga + gb))


def b_ssim_one(x, y):  # skimage 0.19 structural_similarity on float32, data_range inferred = 2
    x, y = x.astype(np.float32), y.astype(np.float32)
    ux, uy = uniform_filter(x, 7), uniform_filter(y, 7)
    uxx, uyy, uxy = uniform_filter(x * x, 7), uniform_filter(y * y, 7), uniform_filter(x * y, 7)
    cn = 49 / 48
    vx, vy, vxy = cn * (uxx - ux * ux), cn * (uyy - uy * uy), cn * (uxy - ux * uy)
    c1, c2 = (0.01 * 2) ** 2, (0.03 * 2) ** 2
    s = ((2 * ux * uy + c1) * (2 * vxy + c2)) / ((ux ** 2 + uy ** 2 + c1) * (vx + vy + c2))
    return float(s[3:-3, 3:-3].mean(dtype=np.float64))


def b_ssim(f, a, b):
    return b_ssim_one(f, a) + b_ssim_one(f, b)


BASELINE = {"EN": lambda f, a, b: b_en(f), "SD": lambda f, a, b: b_sd(f), "SF": lambda f, a, b: b_sf(f),
            "MI": b_mi, "SCD": b_scd, "VIF": b_vif, "Qabf": b_qabf, "SSIM": b_ssim}

# ------------------------------------------------------------------ FMI / Q_P timing

SLOW = ["FMI", "FMI_pixel", "FMI_dct", "FMI_gradient", "Q_P"]


def time_slow_metrics(dataset: Path, n: int, dev: torch.device) -> dict[str, float]:
    """Milliseconds per 640×480 image for each of ``SLOW`` (cddfuse convention: FMI_pixel = raw
    pixels), on the centre crops of the first ``n`` pairs at least that large; stand-in fused
    image round((IR+VIS)/2). Each metric runs once per image after one warm-up image."""
    crops = []
    for pr in scan_pairs(dataset).pairs:
        a, b = (load_gray(p, "cddfuse") for p in pr.paths)
        h, w = a.shape
        if h >= 480 and w >= 640:
            t, l = (h - 480) // 2, (w - 640) // 2
            a, b = a[t:t + 480, l:l + 640], b[t:t + 480, l:l + 640]
            f = np.round((a + b) / 2)
            crops.append(tuple(torch.from_numpy(np.ascontiguousarray(x, dtype=np.float64))[None, None].to(dev)
                               for x in (f, a, b)))
        if len(crops) == n:
            break
    if not crops:
        print("no pair of at least 640×480 in the dataset; FMI / Q_P timing skipped")
        return {}
    res = {}
    for name in SLOW:
        evaluate(*crops[0][:1], list(crops[0][1:]), [name], "cddfuse")  # warm-up (filter caches)
        t0 = time.perf_counter()
        for f, a, b in crops:
            evaluate(f, [a, b], [name], "cddfuse")
        if dev.type == "cuda":
            torch.cuda.synchronize()
        res[name] = 1000 * (time.perf_counter() - t0) / len(crops)
    print(f"per 640×480 image ({len(crops)} TNO centre crops, {dev.type}, {torch.get_num_threads()} thread(s)): "
          + ", ".join(f"{k} {v:.0f} ms" for k, v in res.items()))
    return res


# ------------------------------------------------------------------ main


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", type=Path, default=REPO.parent / "shared" / "datasets" / "tno")
    ap.add_argument("--fused", type=Path, default=None, help="folder of fused images (default: stand-ins)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (default 1, like the baseline)")
    ap.add_argument("--json", type=Path, default=None, help="also write the figures here")
    ap.add_argument("--slow", type=int, default=3, help="640×480 pairs for the FMI / Q_P timing (0: skip)")
    ap.add_argument("--slow-only", action="store_true", help="only the FMI / Q_P timing")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if args.slow_only:
        slow = time_slow_metrics(args.dataset, args.slow, torch.device(args.device))
        if args.json:
            args.json.write_text(json.dumps({"slow_ms_per_image": slow, "device": args.device,
                                             "threads": args.threads, "machine": platform.platform(),
                                             "torch": torch.__version__}, indent=2))
        return

    scan = scan_pairs(args.dataset)
    data = []
    for pr in scan.pairs:
        a, b = (load_gray(p, "cddfuse") for p in pr.paths)
        if args.fused is not None:
            f = load_gray(next(q for q in args.fused.iterdir() if q.stem == pr.stem), "cddfuse")
        else:
            f = np.round((a + b) / 2)
        data.append((pr.stem, f.astype(np.float32), a.astype(np.float32), b.astype(np.float32)))
    print(f"{len(data)} pairs from {args.dataset}; fused: {args.fused or 'round((IR+VIS)/2) stand-ins'}")

    dev = torch.device(args.device)
    base, ours = {}, {}
    t_base = t_ours = 0.0
    if dev.type == "cpu":
        # CPU: one image at a time (keeps the arrays in cache; batching large images is slower
        # here), the two implementations interleaved so that a varying machine load hits both
        for stem, f, a, b in data:
            t0 = time.perf_counter()
            base[stem] = {n: BASELINE[n](f, a, b) for n in NAMES}
            t1 = time.perf_counter()
            out = evaluate(torch.from_numpy(f), [torch.from_numpy(a), torch.from_numpy(b)], NAMES, "cddfuse")
            ours[stem] = {n: float(out[n][0]) for n in NAMES}
            t2 = time.perf_counter()
            t_base += t1 - t0
            t_ours += t2 - t1
    else:
        t0 = time.perf_counter()
        base = {stem: {n: BASELINE[n](f, a, b) for n in NAMES} for stem, f, a, b in data}
        t_base = time.perf_counter() - t0
        groups = defaultdict(list)  # GPU: the images of one size form one batch
        for item in data:
            groups[item[1].shape].append(item)

        def run_batched():
            res = {}
            for items in groups.values():
                f = torch.from_numpy(np.stack([i[1] for i in items])[:, None]).to(dev)
                a = torch.from_numpy(np.stack([i[2] for i in items])[:, None]).to(dev)
                b = torch.from_numpy(np.stack([i[3] for i in items])[:, None]).to(dev)
                out = evaluate(f, [a, b], NAMES, "cddfuse")
                for k, item in enumerate(items):
                    res[item[0]] = {n: float(out[n][k]) for n in NAMES}
            torch.cuda.synchronize()
            return res

        run_batched()  # warm-up (CUDA context, kernels)
        t0 = time.perf_counter()
        ours = run_batched()
        t_ours = time.perf_counter() - t0

    print(f"baseline (numpy/scipy, per image): {t_base:8.2f} s  ({1000 * t_base / len(data):7.1f} ms/pair)")
    print(f"fusecli  (torch, {args.device}, {args.threads} thread(s)):  {t_ours:8.2f} s  "
          f"({1000 * t_ours / len(data):7.1f} ms/pair)")
    print(f"speed-up: {t_base / t_ours:.1f}x")
    worst = {n: max(abs(ours[s][n] - base[s][n]) / max(abs(base[s][n]), 1e-12) for s in base) for n in NAMES}
    print("largest relative difference fusecli vs baseline: "
          + ", ".join(f"{n} {worst[n]:.1e}" for n in NAMES))
    means = {n: float(np.mean([ours[s][n] for s in ours])) for n in NAMES}
    print("means (cddfuse convention): " + ", ".join(f"{n} {means[n]:.4f}" for n in NAMES))
    slow = time_slow_metrics(args.dataset, args.slow, dev) if args.slow > 0 else {}
    if args.json:
        args.json.write_text(json.dumps({
            "pairs": len(data), "baseline_s": t_base, "fusecli_s": t_ours, "speedup": t_base / t_ours,
            "device": args.device, "threads": args.threads, "max_rel_diff": worst, "means": means,
            "slow_ms_per_image": slow, "machine": platform.platform(), "torch": torch.__version__}, indent=2))


if __name__ == "__main__":
    main()
