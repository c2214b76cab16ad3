"""The mini reproduction's report: Tables 2, 4, 5 (and 6/17's SAD rows) from the records, and for each of the
paper's orderings whether it holds here beyond 2 standard errors.

A pair "A better than B" holds when the difference of the row means, in the paper's direction, exceeds twice its
standard error sqrt(s_A^2/n_A + s_B^2/n_B) (seeds as samples); it does not hold when the difference exceeds that
in the other direction; otherwise (or with fewer than 2 seeds a side) it is not resolved. An ordering holds when
every pair of it holds, does not hold when any pair is reversed, and is not resolved otherwise.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

HOLDS, FAILS, OPEN = "holds", "does not hold", "not resolved"


@dataclass(frozen=True)
class Ordering:
    name: str
    table: int
    column: str
    pairs: tuple[tuple[str, str], ...]  # (better row, worse row) in the paper
    higher_is_better: bool


def _chain(rows: tuple[str, ...]) -> tuple[tuple[str, str], ...]:
    return tuple(zip(rows[:-1], rows[1:]))


K1, K9 = "128 NFE: DREAM (K=1)", "128 NFE: DREAM (K=9 w/ SD)"
ORDERINGS = (
    Ordering("Table 2 LP: DREAM > CLIP > REPA > MAR > FLUID", 2, "LP IN-1K",
             _chain(("DREAM", "CLIP", "REPA", "MAR", "FLUID")), True),
    Ordering("Table 2 FID: DREAM < REPA < FLUID", 2, "CC12M FID", _chain(("DREAM", "REPA", "FLUID")), False),
    Ordering("Table 4 LP: DREAM under FX collapses (paper 4.6) below UNI, CD, WM", 4, "LP",
             (("UNI", "FX"), ("CD", "FX"), ("WM", "FX")), True),
    Ordering("Table 4 FID: WM best of the four schedules", 4, "FID", (("WM", "FX"), ("WM", "UNI"), ("WM", "CD")), False),
    Ordering("Table 5 LP: CLIP-M < CLIP < DREAM", 5, "LP", _chain(("DREAM", "CLIP", "CLIP-M")), True),
    Ordering("Table 17 agreement: SAD K=9 above K=1 at equal NFE (128)", 6, "CLIP", ((K9, K1),), True),
)


def pair_verdict(a: tuple[float | None, float | None, int], b: tuple[float | None, float | None, int],
                 higher_is_better: bool) -> tuple[str, str]:
    """(verdict, detail) for "a better than b"; a and b are (mean, std, n) of a row's cell."""
    (ma, sa, na), (mb, sb, nb) = a, b
    if ma is None or mb is None:
        return OPEN, "missing"
    d = (ma - mb) if higher_is_better else (mb - ma)
    if na < 2 or nb < 2 or sa is None or sb is None:
        return OPEN, f"diff {d:+.3g}, n={na}/{nb} (< 2 seeds)"
    se = math.sqrt(sa**2 / na + sb**2 / nb)
    detail = f"diff {d:+.3g} ± {se:.2g} (2 SE {2 * se:.2g})"
    if d > 2 * se:
        return HOLDS, detail
    if d < -2 * se:
        return FAILS, detail
    return OPEN, detail


def check(runs_dir: str | Path) -> list[tuple[Ordering, str, list[tuple[str, str, str, str]]]]:
    """[(ordering, verdict, [(better, worse, pair verdict, detail)])] from the records under ``runs_dir``."""
    from benchmark.tables import compute

    cache: dict[int, dict[str, dict]] = {}
    out = []
    for o in ORDERINGS:
        if o.table not in cache:
            _, rows, _ = compute(o.table, runs_dir)
            cache[o.table] = {r.label: r.cells for r in rows}
        cells = cache[o.table]
        pairs = []
        for better, worse in o.pairs:
            ca, cb = cells[better][o.column], cells[worse][o.column]
            v, detail = pair_verdict((ca.ours, ca.std, ca.n), (cb.ours, cb.std, cb.n), o.higher_is_better)
            pairs.append((better, worse, v, detail))
        verdicts = [p[2] for p in pairs]
        verdict = HOLDS if all(v == HOLDS for v in verdicts) else FAILS if FAILS in verdicts else OPEN
        out.append((o, verdict, pairs))
    return out


def report(runs_dir: str | Path) -> str:
    """Tables 2, 4, 5 and 6 (SAD at equal NFE) as markdown, then the orderings with their verdicts."""
    from benchmark.tables import build_table

    parts = [build_table(n, runs_dir) for n in (2, 4, 5, 6)]
    lines = ["Paper orderings (beyond 2 standard errors over seeds):"]
    for o, verdict, pairs in check(runs_dir):
        lines.append(f"- {o.name} [{o.column}]: {verdict.upper()}")
        lines += [f"    {a} vs {b}: {v} ({d})" for a, b, v, d in pairs]
    return "\n".join(parts) + "\n" + "\n".join(lines) + "\n"
