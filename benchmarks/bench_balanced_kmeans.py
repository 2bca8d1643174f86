"""Benchmark: our JAX balanced k-means (MoEfication) vs the `k-means-constrained` package.

Problem: D = 3072 neuron rows of d_model = 768, L2-normalised (as MoEfication does with W1), split
into MoEfication's 96 experts of exactly 32 neurons (``--expert_size``, default 32 as in
jaxneurons.scoring.moefication). Two data sets:
  * random: i.i.d. standard-normal rows (almost no cluster structure);
  * structured: rows drawn around 40 random unit centres plus isotropic noise.

For each seed, both methods run with one k-means++ init (n_init=1), interleaved so that both see
the same machine load; then both run with n_init=10 (the package's default) once. Inertia is
recomputed the same way for both from the returned labels (sum of squared distances to the
cluster means, float64). Times exclude our one-off jit compile (reported separately).

    PYTHONPATH=. python benchmarks/bench_balanced_kmeans.py --seeds 5 --out benchmarks/balanced_kmeans.md

Needs the `bench` extra (`pip install -e .[bench]`) for k-means-constrained.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time

import jax
import numpy as np

from jaxneurons.scoring.moefication import DEFAULT_EXPERT_SIZE, balanced_kmeans, num_experts


def make_data(kind: str, n: int = 3072, d: int = 768, n_centres: int = 40, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    if kind == "random":
        x = rng.standard_normal((n, d))
    elif kind == "structured":
        centres = rng.standard_normal((n_centres, d))
        centres /= np.linalg.norm(centres, axis=1, keepdims=True)
        x = centres[rng.integers(0, n_centres, n)] + 0.5 / np.sqrt(d) * rng.standard_normal((n, d))
    else:
        raise ValueError(kind)
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def inertia(x: np.ndarray, labels: np.ndarray, k: int) -> float:
    x = x.astype(np.float64)
    sums = np.zeros((k, x.shape[1]))
    np.add.at(sums, labels, x)
    means = sums / np.bincount(labels, minlength=k)[:, None]
    return float(np.sum((x - means[labels]) ** 2))


def run_package(x: np.ndarray, k: int, size: int, seed: int, n_init: int):
    from k_means_constrained import KMeansConstrained

    t = time.perf_counter()
    km = KMeansConstrained(n_clusters=k, size_min=size, size_max=size, n_init=n_init, random_state=seed)
    labels = km.fit_predict(x)
    return time.perf_counter() - t, np.asarray(labels)


def run_ours(x: np.ndarray, k: int, seed: int, n_init: int):
    t = time.perf_counter()
    res = balanced_kmeans(x, k, seed=seed, n_init=n_init)
    return time.perf_counter() - t, res.labels, res.n_iter


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--expert_size", type=int, default=DEFAULT_EXPERT_SIZE, help="neurons per expert")
    ap.add_argument("--no-ninit10", action="store_true", help="skip the n_init=10 comparison")
    ap.add_argument("--out", default=None, help="write a Markdown report here")
    args = ap.parse_args()

    n, d = 3072, 768
    size = args.expert_size
    k = num_experts(n, expert_size=size)
    import k_means_constrained

    load0 = os.getloadavg()
    lines = []

    def emit(s: str = "") -> None:
        print(s, flush=True)
        lines.append(s)

    emit("# Balanced k-means: jaxneurons vs k-means-constrained")
    emit()
    emit(f"Command (repo root): `PYTHONPATH=. python benchmarks/bench_balanced_kmeans.py --seeds {args.seeds}"
         f" --expert_size {size}"
         f"{' --no-ninit10' if args.no_ninit10 else ''} --out benchmarks/balanced_kmeans.md`")
    emit()
    emit(f"Machine: {platform.machine()}, {os.cpu_count()} CPU cores, shared with other jobs "
         f"(load average at start {load0[0]:.1f}); JAX {jax.__version__} "
         f"({jax.default_backend()}), k-means-constrained {k_means_constrained.__version__}. "
         "The two methods are interleaved per seed so both see the same load; absolute times "
         "drift with load, compare the ratios.")
    emit()
    emit(f"Problem: n = {n} rows, d = {d}, L2-normalised, {k} clusters of exactly {size}. "
         "Inertia = sum of squared distances to cluster means, recomputed in float64 from each "
         "method's labels. Times are wall-clock seconds; ours excludes the one-off jit compile.")
    emit()
    t = time.perf_counter()
    balanced_kmeans(make_data("random", seed=99), k, seed=12345)  # jit compile + one throw-away run
    emit(f"One-off first call of ours (jit compile + one run, same shapes for both data sets): "
         f"{time.perf_counter() - t:.2f} s.")
    emit()
    for kind in ("random", "structured"):
        x = make_data(kind)
        emit(f"## {kind}")
        emit()
        emit("| seed | package s | ours s | speed-up | package inertia | ours inertia | ours vs package "
             "| ours Lloyd iters |")
        emit("|---:|---:|---:|---:|---:|---:|---:|---:|")
        tp, to, ip, io = [], [], [], []
        for seed in range(args.seeds):
            t_p, lab_p = run_package(x, k, size, seed, 1)
            t_o, lab_o, it = run_ours(x, k, seed, 1)
            for lab in (lab_p, lab_o):
                assert np.all(np.bincount(lab, minlength=k) == size), "clusters are not exactly balanced"
            i_p, i_o = inertia(x, lab_p, k), inertia(x, lab_o, k)
            tp.append(t_p)
            to.append(t_o)
            ip.append(i_p)
            io.append(i_o)
            emit(f"| {seed} | {t_p:.3f} | {t_o:.3f} | {t_p / t_o:.1f}x | {i_p:.2f} | {i_o:.2f} | "
                 f"{100 * (i_o - i_p) / i_p:+.2f} % | {it} |")
        mp, mo = statistics.median(tp), statistics.median(to)
        mip, mio = statistics.median(ip), statistics.median(io)
        emit(f"| **median** | {mp:.3f} | {mo:.3f} | **{mp / mo:.1f}x** | {mip:.2f} | {mio:.2f} | "
             f"{100 * (mio - mip) / mip:+.2f} % | |")
        emit()
        emit(f"Mean inertia over seeds: package {np.mean(ip):.2f}, ours {np.mean(io):.2f} "
             f"({100 * (np.mean(io) - np.mean(ip)) / np.mean(ip):+.2f} %).")
        emit()
        if not args.no_ninit10:
            t_p, lab_p = run_package(x, k, size, 0, 10)
            t_o, lab_o, _ = run_ours(x, k, 0, 10)
            i_p, i_o = inertia(x, lab_p, k), inertia(x, lab_o, k)
            emit(f"n_init = 10 (package default), best of 10 inits: package {t_p:.3f} s, inertia {i_p:.2f}; "
                 f"ours {t_o:.3f} s, inertia {i_o:.2f} -> speed-up {t_p / t_o:.1f}x, inertia "
                 f"{100 * (i_o - i_p) / i_p:+.2f} %.")
            emit()
    load1 = os.getloadavg()
    emit(f"Load average at end: {load1[0]:.1f}.")
    if max(load0[0], load1[0]) > (os.cpu_count() or 1):
        emit()
        emit("Caveat: the load average exceeded the number of cores during this run, so both methods "
             "were competing with other jobs; ratios on an idle machine may differ.")
    if args.out:
        with open(args.out, "w") as f:
            f.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
