"""anyloss on a dask.distributed cluster: the same calls as on one machine.

    pip install "distributed==$(python -c 'import dask; print(dask.__version__)')"
    python benchmarks/dask_cluster_example.py

Starts a ``LocalCluster`` (worker processes on this machine; on a real cluster
connect the ``Client`` to its scheduler address instead), scores lazily
generated data that never sits in one place, and checks each result against
NumPy on a slice that is brought back to this process.
"""

from __future__ import annotations

import dask.array as da
import numpy as np
from dask.distributed import Client, LocalCluster

import anyloss


def main() -> None:
    with LocalCluster(n_workers=2, threads_per_worker=1, memory_limit="2GiB") as cluster, \
            Client(cluster) as client:
        print(f"dashboard: {client.dashboard_link}")
        rng = da.random.default_rng(0)
        shape, chunks = (400_000, 1000), (20_000, 1000)  # 4e8 float32 elements per array
        x = rng.standard_normal(shape, dtype=np.float32, chunks=chunks)
        y = rng.standard_normal(shape, dtype=np.float32, chunks=chunks)
        t = rng.random(shape, dtype=np.float32, chunks=chunks)

        # anyloss builds Dask graphs; .compute() runs them on the cluster's workers.
        mse = anyloss.mse_loss(x, y)
        bce = anyloss.binary_cross_entropy_with_logits(x, t)
        print(f"mse_loss over {x.size:.2g} elements: {float(mse.compute()):.6f}")
        print(f"binary_cross_entropy_with_logits: {float(bce.compute()):.6f}")

        # The check: the same loss of the first rows, on the cluster and by NumPy here.
        xs, ys, ts = (a[:5000].compute() for a in (x, y, t))
        on_cluster = float(anyloss.mse_loss(x[:5000], y[:5000]).compute())
        by_numpy = float(np.mean((xs.astype(np.float64) - ys) ** 2))
        np.testing.assert_allclose(on_cluster, by_numpy, rtol=1e-5)
        on_cluster = float(anyloss.binary_cross_entropy_with_logits(x[:5000], t[:5000]).compute())
        x64 = xs.astype(np.float64)
        by_numpy = float(np.mean((1 - ts) * x64 + np.logaddexp(0.0, -x64)))
        np.testing.assert_allclose(on_cluster, by_numpy, rtol=1e-5)

        # cross_entropy: 10^5 rows x 1000 classes; the check recomputes 2000 rows in float64.
        logits = rng.standard_normal((100_000, 1000), dtype=np.float32, chunks=(10_000, 1000))
        labels = rng.integers(0, 1000, size=100_000, chunks=10_000)
        print(f"cross_entropy: {float(anyloss.cross_entropy(logits, labels).compute()):.6f}")
        ls, ys_ = logits[:2000].compute().astype(np.float64), labels[:2000].compute()
        peak = ls.max(axis=1, keepdims=True)
        log_probs = ls - peak - np.log(np.exp(ls - peak).sum(axis=1, keepdims=True))
        by_numpy = float(-log_probs[np.arange(2000), ys_].mean())
        on_cluster = float(anyloss.cross_entropy(logits[:2000], labels[:2000]).compute())
        np.testing.assert_allclose(on_cluster, by_numpy, rtol=1e-5)
        print("the cluster's results match NumPy on the slices")


if __name__ == "__main__":  # worker processes import this module: start the cluster only here
    main()
