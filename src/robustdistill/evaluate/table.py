"""Result tables that say what they measured.

Every figure is an accuracy with its noise: `100 p ± 100 se`, the binomial standard error
`se = sqrt(p (1 - p) / n)` on `n` images for one seed, or, when a record holds `accuracy_by_seed`
(see `combine_seeds`), the mean over seeds ± the half-width of its 95% Student-t interval. Each column
names its number of images; `worst case` says which attacks it is over (only those run on the same
images) and is never above any of them; a subset of AutoAttack's attacks standing in for the standard
version is named as a substitute; and a best value is marked only when it beats every other row by
more than the noise (|p1 - p2| > 1.96 sqrt(e1² + e2²), e the standard error or t-interval / 1.96).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from robustdistill.attacks.autoattack import AUTOATTACK_ATTACKS

__all__ = [
    "Cell",
    "cell",
    "column_size",
    "column_title",
    "columns",
    "combine_seeds",
    "format_eps",
    "format_norm",
    "is_autoattack_substitute",
    "leader",
    "number",
    "substitutes",
    "text_grid",
    "worst_case_scope",
]

Z_95 = 1.96


@dataclass(frozen=True)
class Cell:
    """One figure of a table: accuracy (a fraction), its standard error and where it was measured."""

    value: float
    error: float
    n: int | None
    seeds: int = 1

    def text(self, digits: int = 1) -> str:
        shown = self.error * Z_95 if self.seeds > 1 else self.error  # t-interval half-width, or standard error
        return f"{100 * self.value:.{digits}f} ± {100 * shown:.{digits}f}"


def number(value: Any) -> float:
    """A float for tables and figures; missing values and text that is not a number become NaN."""
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def format_eps(eps: float) -> str:
    """`8/255 (0.03137)` for a small multiple of 1/255, else the value (`0.1`)."""
    scaled = eps * 255
    if eps < 0.1 and abs(scaled - round(scaled)) < 1e-4:
        return f"{round(scaled)}/255 ({eps:.4g})"
    return f"{eps:.4g}"


def format_norm(norm: str) -> str:
    """`L-inf` / `L2` for the config's `linf` / `l2`."""
    return {"linf": "L-inf", "l2": "L2"}.get(norm.lower(), norm)


def is_autoattack_substitute(name: str) -> bool:
    """True for a custom subset of AutoAttack's attacks ("apgd-ce+apgd-t"), which is not standard AutoAttack."""
    parts = [p.strip() for p in str(name).lower().split("+")]
    return all(p in AUTOATTACK_ATTACKS for p in parts)


def substitutes(records: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """The columns of `records` that stand in for standard AutoAttack."""
    return [name for name in columns(records) if is_autoattack_substitute(name)]


def column_size(record: Mapping[str, Any], name: str) -> int | None:
    """Images the record's `name` column was measured on (its own `n_examples`, else the record's)."""
    if name == "worst_case":
        return record.get("n_examples")
    settings = (record.get("attacks") or {}).get(name) or {}
    return settings.get("n_examples", record.get("n_examples"))


def worst_case_scope(record: Mapping[str, Any]) -> list[str]:
    """The attacks the record's worst case is over: `worst_case_over`, else every column on its images."""
    named = record.get("worst_case_over")
    if isinstance(named, list):
        return [str(name) for name in named]
    n = record.get("n_examples")
    return [name for name in record.get("accuracy", {}) if name != "worst_case" and column_size(record, name) == n]


def _seed_values(record: Mapping[str, Any], name: str) -> list[float] | None:
    values = (record.get("accuracy_by_seed") or {}).get(name)
    return [float(v) for v in values] if isinstance(values, list) and len(values) > 1 else None


def cell(record: Mapping[str, Any], name: str) -> Cell | None:
    """The figure of column `name` (None when the record lacks it); the worst case is capped by its scope."""
    value = number((record.get("accuracy") or {}).get(name))
    if math.isnan(value):
        return None
    n = column_size(record, name)
    by_seed = _seed_values(record, name)
    if name == "worst_case":
        included = [number(record["accuracy"].get(a)) for a in worst_case_scope(record)]
        value = min([value, *[v for v in included if not math.isnan(v)]])
    if by_seed is not None:
        from scipy.stats import t as student_t

        k = len(by_seed)
        mean = sum(by_seed) / k
        sd = math.sqrt(sum((v - mean) ** 2 for v in by_seed) / (k - 1))
        half = float(student_t.ppf(0.975, k - 1)) * sd / math.sqrt(k)
        return Cell(min(value, mean) if name == "worst_case" else mean, half / Z_95, n, seeds=k)
    error = math.sqrt(max(value * (1 - value), 0.0) / n) if n else math.nan
    return Cell(value, error, n)


def columns(records: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """Every attack of any record in first-seen order, clean first and `worst_case` last."""
    names: list[str] = []
    for record in records.values():
        for name in record.get("accuracy", {}):
            if name not in names:
                names.append(name)
    return sorted(names, key=lambda name: (name != "clean", name == "worst_case"))


def column_title(name: str, records: Mapping[str, Mapping[str, Any]], sep: str = ", ") -> str:
    """`name` with its number of images (when every record agrees, after `sep`); the worst case names
    the attacks it leaves out (run on other images), a substitute for AutoAttack says it is one."""
    if name == "worst_case":
        shown = [a for a in columns(records) if a != "worst_case"]
        scopes = {tuple(worst_case_scope(r)) for r in records.values() if "worst_case" in r.get("accuracy", {})}
        if len(scopes) == 1:
            scope = scopes.pop()
            excluded = [a for a in shown if a not in scope]
            title = "worst case" + (f" (excl. {', '.join(excluded)}: other images)" if excluded else " (all attacks)")
        else:
            title = "worst case (over each row's attacks on its own images)"
    elif is_autoattack_substitute(name):
        title = f"{name.upper().replace('+', ' + ')} (AutoAttack substitute)"
    else:
        title = name.replace("_", " ")
    sizes = {column_size(r, name) for r in records.values() if name in r.get("accuracy", {})}
    if len(sizes) == 1 and None not in sizes:
        title += f"{sep}n={sizes.pop()}"
    return title


def leader(cells: Sequence[Cell | None]) -> int | None:
    """Index of the highest cell when it beats every other by more than the noise (95%), else None."""
    present = [(i, c) for i, c in enumerate(cells) if c is not None and not math.isnan(c.error)]
    if len(present) < 2:
        return None
    present.sort(key=lambda item: item[1].value, reverse=True)
    (best_index, best), others = present[0], present[1:]
    beats = all(best.value - c.value > Z_95 * math.hypot(best.error, c.error) for _, c in others)
    return best_index if beats else None


def _cell_text(figure: Cell | None, size_in_title: bool) -> str:
    if figure is None:
        return "-"
    return figure.text() + ("" if size_in_title or figure.n is None else f" (n={figure.n})")


def text_grid(
    records: Mapping[str, Mapping[str, Any]], *, contenders: Sequence[str] = (), sep: str = ", "
) -> tuple[list[str], list[list[str]]]:
    """Column titles and cell texts of one row per record: `accuracy ± error`, with ` (n=...)` unless the
    title gives the column's size; among the rows labelled in `contenders`, each column's leader beyond the
    noise (`leader`) is in **bold**."""
    names = columns(records)
    titles = [column_title(name, records, sep) for name in names]
    shared = [f"{sep}n=" in title for title in titles]
    grid = [[cell(record, name) for name in names] for record in records.values()]
    texts = [[_cell_text(c, shared[j]) for j, c in enumerate(row)] for row in grid]
    rows = [i for i, label in enumerate(records) if label in contenders]
    for j in range(len(names)):
        best = leader([grid[i][j] for i in rows])
        if best is not None:
            texts[rows[best]][j] = f"**{texts[rows[best]][j]}**"
    return titles, texts


def combine_seeds(records: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """One record from the records of the same model trained (or evaluated) with different seeds.

    `accuracy` is the mean over seeds, `accuracy_by_seed` the values and `seeds` the seeds, so that
    the tables show mean ± 95% t-interval; the other keys come from the first record.
    """
    if len(records) < 2:
        raise ValueError("combine_seeds needs the records of at least two seeds")
    names = [n for n in records[0]["accuracy"] if all(n in r["accuracy"] for r in records)]
    combined = dict(records[0])
    combined["accuracy_by_seed"] = {n: [float(r["accuracy"][n]) for r in records] for n in names}
    combined["accuracy"] = {n: sum(v) / len(v) for n, v in combined["accuracy_by_seed"].items()}
    combined["seeds"] = [r.get("seed") for r in records]
    return combined
