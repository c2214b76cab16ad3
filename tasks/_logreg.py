"""Few-shot classifiers solved for all episodes at once.

``batched_logreg`` minimises sklearn's multinomial ``LogisticRegression`` objective (lbfgs, C, unpenalised
intercept) per episode: C * sum_i CE(W x_i + b, y_i) + 1/2 ||W||^2. By the representer theorem the optimal
W lies in the span of the episode's support features, W = A X, so each episode is a (K x (n + 1))-parameter
problem on the Gram matrix G = X X^T whatever the feature width: Newton's method with a backtracking line
search on [E, K(n+1), K(n+1)] Hessians reaches the optimum (the one lbfgs approximates) in ~10 steps.

``prototype`` is SimpleShot's CL2N nearest-centroid classifier as used by lgssl (centre by the support
mean, L2-normalise, nearest class mean).
"""

from __future__ import annotations

import torch


def _objective(G: torch.Tensor, Y: torch.Tensor, A: torch.Tensor, b: torch.Tensor, C: float) -> torch.Tensor:
    """[E]: C * sum CE + 1/2 tr(A G A^T) for A [E, K, n], b [E, K]."""
    Z = G @ A.transpose(1, 2) + b[:, None, :]
    ce = -(Y * torch.log_softmax(Z, dim=-1)).sum((1, 2))
    return C * ce + 0.5 * ((A @ G) * A).sum((1, 2))


def batched_logreg(xs: torch.Tensor, ys: torch.Tensor, n_classes: int, C: float = 1.0, max_iter: int = 30,
                   tol: float = 1e-4, dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
    """Fit one multinomial logistic regression per episode.

    xs [E, n, D] support features, ys [E, n] labels in [0, n_classes). Returns (W [E, K, D], b [E, K]) in
    ``dtype``; logits of a query q are ``q @ W^T + b``. Newton stops per episode once its largest gradient
    entry is below ``tol`` (float32 reaches ~1e-4 on L2-normalised features; Newton needs ~3 steps there).
    """
    X = xs.to(dtype)
    E, n, _ = X.shape
    K, P_dim = n_classes, n + 1
    Y = torch.nn.functional.one_hot(ys.long(), K).to(dtype)  # [E, n, K]
    G = X @ X.transpose(1, 2)  # [E, n, n]
    phi = torch.cat([G, G.new_ones(E, n, 1)], dim=2)  # [E, n, n+1]: logits Z[:, i, k] = phi_i . theta_k
    outer = (phi[:, :, :, None] * phi[:, :, None, :]).reshape(E, n, P_dim * P_dim)
    pen = G.new_zeros(E, 1, 1, P_dim, P_dim)
    pen[:, 0, 0, :n, :n] = G
    eye_k = torch.eye(K, dtype=X.dtype)[None, :, :, None, None]
    # a small ridge: the softmax's common shift of the intercepts (and a rank-deficient G) are flat directions
    ridge = (1e-10 if dtype == torch.float64 else 1e-5) * torch.eye(K * P_dim, dtype=X.dtype)
    A, b = X.new_zeros(E, K, n), X.new_zeros(E, K)
    f = _objective(G, Y, A, b, C)
    idx = torch.arange(E)  # episodes still iterating
    for _ in range(max_iter):
        Gi, Yi, Ai, bi, fi = G[idx], Y[idx], A[idx], b[idx], f[idx]
        m = len(idx)
        P = torch.softmax(Gi @ Ai.transpose(1, 2) + bi[:, None, :], dim=-1)  # [m, n, K]
        R = C * (P - Yi)
        grad = torch.cat([(R.transpose(1, 2) + Ai) @ Gi, R.sum(1)[:, :, None]], dim=2).reshape(m, K * P_dim)
        keep = grad.abs().amax(1) > tol
        if not bool(keep.any()):
            break
        idx, Gi, Yi, Ai, bi, fi, P, grad = (t[keep] for t in (idx, Gi, Yi, Ai, bi, fi, P, grad))
        m = len(idx)
        # Hessian: sum_i C (diag p_i - p_i p_i^T) kron phi_i phi_i^T (cross-entropy) + I_K kron [[G, 0], [0, 0]]
        S = C * (torch.diag_embed(P) - P[..., :, None] * P[..., None, :])  # [m, n, K, K]
        H = (S.reshape(m, n, K * K).transpose(1, 2) @ outer[idx]).reshape(m, K, K, P_dim, P_dim)
        H = (H + eye_k * pen[idx]).transpose(2, 3).reshape(m, K * P_dim, K * P_dim) + ridge
        L, info = torch.linalg.cholesky_ex(H)  # SPD: convex objective + ridge
        if bool(info.any()):
            step = torch.linalg.solve(H, grad.unsqueeze(-1))
        else:
            step = torch.cholesky_solve(grad.unsqueeze(-1), L)
        step = step.squeeze(-1).reshape(m, K, P_dim)
        decrease = (grad * step.reshape(m, -1)).sum(1)  # directional derivative along -step
        # Backtracking (Armijo): t = 1 is taken almost always; shorter steps only for the episodes that need them.
        new_A, new_b, new_f = Ai, bi, fi
        todo = torch.ones(m, dtype=torch.bool)
        for t in (1.0, 0.5, 0.25, 0.125, 0.0625, 0.03125, 0.015625, 0.0078125):
            A_t, b_t = Ai - t * step[:, :, :n], bi - t * step[:, :, n]
            f_t = _objective(Gi, Yi, A_t, b_t, C)
            ok = todo & (f_t <= fi - 1e-4 * t * decrease)
            new_A = torch.where(ok[:, None, None], A_t, new_A)
            new_b = torch.where(ok[:, None], b_t, new_b)
            new_f = torch.where(ok, f_t, new_f)
            todo &= ~ok
            if not bool(todo.any()):
                break
        A[idx], b[idx], f[idx] = new_A, new_b, new_f
        idx = idx[~todo]  # an episode whose step no longer decreases the objective is at the optimum
        if len(idx) == 0:
            break
    return A @ X, b


def logreg_predict(support: torch.Tensor, support_y: torch.Tensor, query: torch.Tensor, n_classes: int,
                   C: float = 1.0, chunk: int = 500) -> torch.Tensor:
    """Predicted labels [E, q] of the queries [E, q, D], fitting on support [E, n, D] (chunks of episodes)."""
    out = []
    for i in range(0, len(support), chunk):
        W, b = batched_logreg(support[i:i + chunk], support_y[i:i + chunk], n_classes, C)
        out.append((query[i:i + chunk].to(W.dtype) @ W.transpose(1, 2) + b[:, None, :]).argmax(-1))
    return torch.cat(out)


def prototype_predict(support: torch.Tensor, support_y: torch.Tensor, query: torch.Tensor, n_classes: int) -> torch.Tensor:
    """SimpleShot CL2N: subtract the support mean, L2-normalise, nearest class mean (Euclidean)."""
    mu = support.mean(1, keepdim=True)
    s = torch.nn.functional.normalize(support - mu, dim=-1)
    q = torch.nn.functional.normalize(query - mu, dim=-1)
    onehot = torch.nn.functional.one_hot(support_y.long(), n_classes).to(s.dtype)  # [E, n, K]
    protos = onehot.transpose(1, 2) @ s / onehot.sum(1)[:, :, None]  # [E, K, D]
    return torch.cdist(q, protos).argmin(-1)
