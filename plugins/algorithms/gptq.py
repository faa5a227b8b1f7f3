"""GPTQ rounding (Frantar et al. 2022, Algorithm 1), batched over groups and rows, and the output error
``e H e^T`` it minimizes (not a plugin)."""
import numpy as np

from .linalg import cholesky, lower_inverse, matmul


def hessian_error(e: np.ndarray, h: np.ndarray) -> np.ndarray:
    """``e_r H e_r^T`` for every row: ``e [G, R, D]``, ``h [G, D, D]`` -> ``[G, R]``."""
    return np.einsum("grd,grd->gr", matmul(e, h), e)


def damped_inverse_cholesky(h: np.ndarray, damp: float) -> tuple:
    """Upper Cholesky factor ``U`` of ``(H + lambda I)^-1`` per group (``(H + lambda I)^-1 = U^T U``), as
    GPTQ uses it; inputs that are always zero (zero diagonal) get a unit diagonal. ``lambda`` is ``damp``
    times the mean diagonal, grown tenfold until the factorization succeeds. Returns ``(U, lambda)``.

    With ``J`` the reversal permutation and ``J (H + lambda I) J = L L^T``: ``U = J L^-1 J``."""
    h = np.array(h, np.float64)
    d = h.shape[-1]
    idx = np.arange(d)
    diag = h[:, idx, idx]
    dead = diag <= 0
    h[:, idx, idx] = np.where(dead, 1.0, diag)
    mean_diag = np.maximum(np.mean(np.where(dead, 1.0, diag), axis=-1), 1e-30)
    rev = h[:, ::-1, ::-1]
    for _ in range(8):
        lam = damp * mean_diag
        hd = rev.copy()
        hd[:, idx, idx] += lam[:, None]
        try:
            u = lower_inverse(cholesky(hd))[:, ::-1, ::-1]
            if np.all(np.isfinite(u)):
                return np.ascontiguousarray(u), lam
        except np.linalg.LinAlgError:
            pass
        damp = damp * 10 if damp > 0 else 1e-6
    raise np.linalg.LinAlgError("the Hessian is not positive definite even with strong dampening")


def gptq(w: np.ndarray, h: np.ndarray, quantize, damp: float = 0.01, block: int = 128) -> tuple:
    """GPTQ rounding (Frantar et al. 2022, Algorithm 1) of ``w [G, R, D]`` for ``H [G, D, D]``, batched over
    groups and rows. ``quantize(col, j)`` maps column ``j`` of the (error-updated) weights ``[G, R]`` to
    ``(levels, dequantized)``. Returns ``(levels [G, R, D], dequantized [G, R, D])``."""
    u, _ = damped_inverse_cholesky(h, damp)
    w = np.array(w, np.float64)
    g, r, d = w.shape
    q = np.empty_like(w)
    k = np.empty_like(w)
    for i1 in range(0, d, block):
        i2 = min(i1 + block, d)
        w1 = w[:, :, i1:i2].copy()
        err1 = np.zeros_like(w1)
        u1 = u[:, i1:i2, i1:i2]
        for i in range(i2 - i1):
            col = w1[:, :, i]
            kk, qq = quantize(col, i1 + i)
            k[:, :, i1 + i], q[:, :, i1 + i] = kk, qq
            err = (col - qq) / u1[:, i, i][:, None]
            w1[:, :, i:] -= err[:, :, None] * u1[:, None, i, i:]
            err1[:, :, i] = err
        if i2 < d:
            w[:, :, i2:] -= matmul(err1, u[:, i1:i2, i2:])
    return k, q
