r"""The compiled time loops: rollout, and adjoint with the gradient contractions (numba).

Arrays follow the package's axis order ``[time, batch, neuron]``; sparse matrices are given as
rows in CSR form ``(ptr, idx, val)`` (see :func:`rows`). Constants come in an array ``c`` of the
arrays' dtype so that float32 stays float32 (a Python float would promote to float64).

The equations are those of :mod:`mdgl_analysis.network.neuron` (forward) and
:mod:`mdgl_analysis.rules.adjoint` (backward), in the same order of operations.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

# constants of the rollout: c = [alpha, 1 - rho, v_th, gamma, n_ref]
# constants of the adjoint: c = [alpha, rho, 1 - rho, -v_th, 1 - alpha]


def rows(w: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """CSR of the nonzero entries of ``w [rows, cols]``: ``ptr [rows + 1]``, ``idx``, ``val``."""
    r, col = np.nonzero(w)
    ptr = np.zeros(w.shape[0] + 1, dtype=np.int64)
    np.cumsum(np.bincount(r, minlength=w.shape[0]), out=ptr[1:])
    return ptr, col.astype(np.int64), np.ascontiguousarray(w[r, col])


@njit(parallel=True, cache=True)
def rollout(
    x, in_ptr, in_idx, in_val, rec_ptr, rec_idx, rec_val, beta, c, z, refr, psi, v, a, thr, n_chunks
):
    """Run the network over a trial from the zero state: blocks of trials in parallel, each block
    stepping through time with its trials' state in cache (outputs written a step at a time).

    Arrays (numpy; numba compiles the kernel for their dtype):

    * ``x``: ``[time, batch, input]`` input counts.
    * ``in_ptr``, ``in_idx``, ``in_val``: rows of ``(1 - alpha) W_in^T`` (per input: post cells,
      weights).
    * ``rec_ptr``, ``rec_idx``, ``rec_val``: rows of ``(1 - alpha) W_rec^T`` (per presynaptic
      cell).
    * ``beta``: ``[neuron]``; ``c``: constants ``[alpha, 1 - rho, v_th, gamma, n_ref]``.
    * ``z``, ``psi``: ``[time, batch, neuron]`` outputs; ``refr``: bool ``[time, batch, neuron]``
      output.
    * ``v``, ``a``, ``thr``: ``[time, batch, neuron]`` outputs, or empty ``[0, 0, 0]`` arrays
      (lean).
    * ``n_chunks``: blocks of trials run in parallel.
    """
    n_steps, batch, n_in = x.shape
    n = beta.shape[0]
    alpha, rho1, v_th, gamma, n_ref = c[0], c[1], c[2], c[3], c[4]
    zero = c[0] - c[0]
    one = zero + 1
    full = v.shape[0] > 0
    for ch in prange(n_chunks):
        b0 = ch * batch // n_chunks
        nb = (ch + 1) * batch // n_chunks - b0
        vb = np.zeros((nb, n), dtype=c.dtype)
        ab = np.zeros((nb, n), dtype=c.dtype)
        ref = np.zeros((nb, n), dtype=c.dtype)
        cur = np.empty(n, dtype=c.dtype)
        spk = np.empty((nb, n), dtype=np.int64)  # the cells that spiked at the previous step
        n_spk = np.zeros(nb, dtype=np.int64)
        for t in range(n_steps):
            for bb in range(nb):
                b = b0 + bb
                cur[:] = zero
                for i in range(n_in):
                    xi = x[t, b, i]
                    if xi != 0:
                        for k in range(in_ptr[i], in_ptr[i + 1]):
                            cur[in_idx[k]] += xi * in_val[k]
                for s in range(n_spk[bb]):
                    q = spk[bb, s]
                    for k in range(rec_ptr[q], rec_ptr[q + 1]):
                        cur[rec_idx[k]] += rec_val[k]
                zt = z[t, b]
                pt = psi[t, b]
                rt = refr[t, b]
                zprev = z[t - 1, b] if t > 0 else cur  # cur: unused at t = 0 (no spike yet)
                vr = vb[bb]
                ar = ab[bb]
                fr = ref[bb]
                for j in range(n):  # elementwise, branch-free: vectorised
                    zj = zprev[j] if t > 0 else zero
                    vj = cur[j] + alpha * vr[j] - v_th * zj
                    aj = ar[j] + rho1 * (zj - ar[j])
                    th = aj * beta[j] + v_th
                    refractory = fr[j] > zero
                    sj = (vj - th) / v_th
                    fired = (sj > zero) & (fr[j] <= zero)
                    zj = one if fired else zero
                    fr[j] = max(fr[j] - one, zj * n_ref)
                    d = max(one - abs(sj), zero) * gamma / v_th
                    pt[j] = zero if refractory else d
                    rt[j] = refractory
                    zt[j] = zj
                    vr[j] = vj
                    ar[j] = aj
                if full:
                    for j in range(n):
                        v[t, b, j] = vr[j]
                        a[t, b, j] = ar[j]
                        thr[t, b, j] = ar[j] * beta[j] + v_th
                m = 0
                for j in range(n):
                    if zt[j] != zero:
                        spk[bb, m] = j
                        m += 1
                n_spk[bb] = m


@njit(cache=True)
def _sparse_rows_t(ptr, idx, val, u, live, out):
    """``out[p, :] = sum_j val[j, p] u[j, :]`` over the rows ``j`` of a CSR matrix whose ``live``
    flag is set (``u`` and ``out`` are ``[neuron, trial]``: the trials are the vectorised axis)."""
    out[:, :] = 0
    nb = u.shape[1]
    for j in range(ptr.shape[0] - 1):
        if live[j]:
            uj = u[j]
            for k in range(ptr[j], ptr[j + 1]):
                wk = val[k]
                row = out[idx[k]]
                for bb in range(nb):
                    row[bb] += wk * uj[bb]


@njit(cache=True)
def _transpose(src, dst, live):
    """``dst = src^T``; ``live[j]``: whether row j of ``dst`` has a nonzero (``live`` of length 0:
    not computed)."""
    rows_, cols = src.shape
    for r in range(rows_):
        for j in range(cols):
            dst[j, r] = src[r, j]
    if live.shape[0] == 0:
        return
    n, nb = dst.shape
    for j in range(n):
        live[j] = False
        for bb in range(nb):
            if dst[j, bb] != 0:
                live[j] = True
                break


@njit(parallel=True, cache=True)
def adjoint(
    signal,
    psi,
    beta,
    c,
    w_ptr,
    w_idx,
    w_val,
    m_ptr,
    m_idx,
    m_val,
    lam,
    total,
    x,
    z,
    dy_bar,
    g_in,
    g_rec,
    g_out,
    adaptive,
):
    r"""The backward recursion of :func:`mdgl_analysis.rules.adjoint.adjoint`, with MDGL's signal
    and, optionally, the gradient contractions of
    :func:`mdgl_analysis.rules.adjoint.gradients` fused in.

    Per step, from the last: the signal ``s(t) = signal(t) [+ (1-alpha) What^T (psi signal)(t+1)
    for t <= T-2]``, ``dz = s + [(1-alpha) W^T dv(t+1)] - v_th dv(t+1) + (1-rho) da(t+1)``,
    ``g = psi dz``, ``da = rho da - beta g``, ``dv = g + alpha dv``, ``lam(t) = (1-alpha) dv``.
    Blocks of trials run in parallel (one per slice of ``g_in``). The elementwise part runs on
    ``[trial, neuron]`` rows as the arrays lie in memory; the sparse products (rows of ``W`` and
    ``What`` by postsynaptic cell, CSR ``[post, pre]``) on a transposed ``[neuron, trial]`` copy,
    trials the vectorised axis, skipping cells whose factor is zero in every trial of the block.
    With gradients, each step's ``lam`` row is contracted at once with the nonzero inputs
    ``x(t)``, and the spikes ``z(t)`` with ``lam(t+1)`` and ``dy_bar(t)``.

    Arrays (numpy; numba compiles the kernel for their dtype):

    * ``signal``, ``psi``: ``[time, batch, neuron]``.
    * ``beta``: ``[neuron]``; ``c``: ``[alpha, rho, 1 - rho, -v_th, 1 - alpha]`` in the arrays'
      dtype.
    * ``w_ptr``, ``w_idx``, ``w_val``: rows of ``(1 - alpha) W_rec`` (BPTT), or empty (``w_ptr``
      of length 0).
    * ``m_ptr``, ``m_idx``, ``m_val``: rows of ``(1 - alpha) What`` (MDGL), or empty likewise.
    * ``lam``: ``[time, batch, neuron]`` output, or empty ``[0, 0, 0]`` (not kept).
    * ``total``: ``[time, batch, neuron]`` output of ``s + (1-alpha) W^T dv(t+1)`` (BPTT), or
      empty.
    * ``x``: ``[time, batch, input]``; ``z``: ``[time, batch, neuron]``;
    * ``dy_bar``: ``[time, batch, output]``.
    * ``g_in``, ``g_rec``, ``g_out``: zeroed outputs ``[chunk, input, neuron]``,
      ``[chunk, pre, post]`` (diagonal not zeroed) and ``[chunk, neuron, output]``, transposed
      gradients to be summed over the chunks; ``[chunk, 0, 0]`` to compute none (then only
      ``lam`` and ``total``).
    * ``adaptive``: whether any beta is nonzero.
    """
    n_steps, batch, n = signal.shape
    n_chunks = g_in.shape[0]
    n_in = x.shape[2]
    k_out = dy_bar.shape[2]
    alpha, rho, rho1, neg_vth, scale = c[0], c[1], c[2], c[3], c[4]
    use_w = w_ptr.shape[0] > 0
    use_m = m_ptr.shape[0] > 0
    keep_lam = lam.shape[0] > 0
    keep_total = total.shape[0] > 0
    grads = g_in.shape[1] > 0
    neg_beta = -beta
    for ch in prange(n_chunks):
        b0 = ch * batch // n_chunks
        nb = (ch + 1) * batch // n_chunks - b0
        dv = np.zeros((nb, n), dtype=c.dtype)
        da = np.zeros((nb, n), dtype=c.dtype)
        pl = np.zeros((nb, n), dtype=c.dtype)  # (psi * signal)(t + 1), MDGL's drive
        u_t = np.zeros((n, nb), dtype=c.dtype)  # transposed factor of a sparse product
        acc_t = np.zeros((n, nb), dtype=c.dtype)  # and its result
        acc_w = np.zeros((nb, n), dtype=c.dtype)  # the results as [trial, neuron]
        acc_m = np.zeros((nb, n), dtype=c.dtype)
        live = np.zeros(n, dtype=np.bool_)
        no_flags = np.zeros(0, dtype=np.bool_)
        lr = np.empty(n, dtype=c.dtype)  # lam(t) of one trial
        ln = np.zeros((nb, n), dtype=c.dtype)  # lam(t+1) of each trial
        gi, gr, go = g_in[ch], g_rec[ch], g_out[ch]
        for t in range(n_steps - 1, -1, -1):
            mod = use_m and t < n_steps - 1
            if mod:
                _transpose(pl, u_t, live)
                _sparse_rows_t(m_ptr, m_idx, m_val, u_t, live, acc_t)
                _transpose(acc_t, acc_m, no_flags)
            if use_w:
                _transpose(dv, u_t, live)
                _sparse_rows_t(w_ptr, w_idx, w_val, u_t, live, acc_t)
                _transpose(acc_t, acc_w, no_flags)
            for bb in range(nb):
                b = b0 + bb
                sr = signal[t, b]
                pr = psi[t, b]
                dvr = dv[bb]
                dar = da[bb]
                plr = pl[bb]
                for p in range(n):
                    d = sr[p]
                    if mod:
                        d += acc_m[bb, p]
                    if use_w:
                        d += acc_w[bb, p]
                        if keep_total:
                            total[t, b, p] = d
                    d += neg_vth * dvr[p]
                    if adaptive:
                        d += rho1 * dar[p]
                    g = d * pr[p]
                    if adaptive:
                        dar[p] = dar[p] * rho + g * neg_beta[p]
                    dvp = g + alpha * dvr[p]
                    dvr[p] = dvp
                    lr[p] = dvp * scale
                    if use_m:
                        plr[p] = pr[p] * sr[p]
                if keep_lam:
                    lam[t, b, :] = lr
                if not grads:
                    continue
                xt = x[t, b]
                if _count(xt) > 0:
                    for i in range(n_in):
                        xi = xt[i]
                        if xi != 0:
                            row = gi[i]
                            for p in range(n):
                                row[p] += xi * lr[p]
                # the spikes z(t) meet lam(t+1) (one synaptic delay) and dy_bar(t)
                zt = z[t, b]
                nxt = ln[bb]
                if _count(zt) > 0:
                    dy = dy_bar[t, b]
                    for q in range(n):
                        zq = zt[q]
                        if zq != 0:
                            for k in range(k_out):
                                go[q, k] += zq * dy[k]
                            if t < n_steps - 1:
                                row = gr[q]
                                for p in range(n):
                                    row[p] += zq * nxt[p]
                nxt[:] = lr


@njit(cache=True)
def _count(row):
    """Nonzero entries of a row (a branch-free, vectorised scan)."""
    m = 0
    for v in row:
        m += v != 0
    return m
