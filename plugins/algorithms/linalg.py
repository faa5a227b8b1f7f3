"""Blocked Cholesky factorization and triangular inverse of stacks of matrices (not a plugin): LAPACK
only sees blocks of ``nb`` rows, the rest is matrix products."""
import numpy as np


def _t(a: np.ndarray) -> np.ndarray:
    return np.swapaxes(a, -1, -2)


def matmul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Stacked matrix product; one group goes to BLAS as a plain 2-D product rather than through
    numpy's stacked loop (docs/benchmarks.md)."""
    if a.shape[0] == 1 and b.shape[0] == 1:
        return (a[0] @ b[0])[None]
    return np.matmul(a, b)


def cholesky(a: np.ndarray, nb: int = 64) -> np.ndarray:
    """Lower Cholesky factor of a stack of SPD matrices ``[G, n, n]``, blocked so that LAPACK only sees
    ``nb``-sized blocks and the work is matrix products (docs/benchmarks.md)."""
    n = a.shape[-1]
    if n <= 2 * nb:
        return np.linalg.cholesky(a)
    lo = np.zeros_like(a)
    for k in range(0, n, nb):
        e = min(k + nb, n)
        lk = lo[:, k:e, :k]
        l11 = np.linalg.cholesky(a[:, k:e, k:e] - matmul(lk, _t(lk)))
        lo[:, k:e, k:e] = l11
        if e < n:
            a21 = a[:, e:, k:e] - matmul(lo[:, e:, :k], _t(lk))
            lo[:, e:, k:e] = matmul(a21, _t(np.linalg.inv(l11)))
    return lo


def lower_inverse(lo: np.ndarray, nb: int = 64) -> np.ndarray:
    """Inverse of a stack of lower-triangular matrices ``[G, n, n]`` (blocked, as :func:`cholesky`)."""
    n = lo.shape[-1]
    if n <= 2 * nb:
        return np.tril(np.linalg.inv(lo))
    x = np.zeros_like(lo)
    for k in range(0, n, nb):
        e = min(k + nb, n)
        xkk = np.tril(np.linalg.inv(lo[:, k:e, k:e]))
        x[:, k:e, k:e] = xkk
        if k:
            x[:, k:e, :k] = -matmul(xkk, matmul(lo[:, k:e, :k], x[:, :k, :k]))
    return x
