"""Small timing utilities shared by the vijax benchmarks.

Every benchmark runs the same model three ways in one process (vijax, hand-written JAX and
NumPyro), times the implementations with :func:`time_scans` (steady state, round-robin) or
:func:`time_first_and_second` (a first call with compilation, then a second call), builds one
:class:`Row` per measured case with :func:`make_row`, and writes the rows with
:func:`write_results` to ``benchmarks/results/<name>.json`` (a list of rows) and
``benchmarks/results/<name>.md`` (a markdown table headed by the environment).

The machines these run on are small and noisy, so every figure is the median of several
repeats, and the ratios are medians of ratios taken repeat by repeat (the implementations are
timed round-robin, so a slow moment of the machine hits all of them alike).
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import os
import platform
import statistics
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import jax

RESULTS_DIR = Path(__file__).resolve().parent / "results"
IMPLEMENTATIONS = ("vijax", "hand", "numpyro")


def block(tree: Any) -> Any:
    """Wait until every JAX array in ``tree`` is computed, then return ``tree``.

    Objects that JAX does not know as pytrees (for example a result class) are searched for
    the usual attributes ``params``, ``state`` and ``history``.
    """
    leaves = jax.tree.leaves(tree)
    if len(leaves) == 1 and leaves[0] is tree and not isinstance(tree, jax.Array):
        leaves = [
            getattr(tree, name) for name in ("params", "state", "history") if hasattr(tree, name)
        ]
    jax.block_until_ready(leaves)
    return tree


def timed(fn: Callable[..., Any], *args: Any) -> tuple[float, Any]:
    """``(seconds, result)`` of one call ``fn(*args)``, its outputs blocked until ready."""
    start = time.perf_counter()
    result = block(fn(*args))
    return time.perf_counter() - start, result


def time_once(fn: Callable[..., Any], *args: Any) -> float:
    """Seconds taken by one call ``fn(*args)``, its outputs blocked until ready."""
    return timed(fn, *args)[0]


def time_call(fn: Callable[..., Any], *args: Any, repeats: int = 7) -> list[float]:
    """Seconds taken by each of ``repeats`` calls ``fn(*args)`` (outputs blocked until ready).

    Warm the function up (compile it) before timing steady-state cost with this.
    """
    return [time_once(fn, *args) for _ in range(repeats)]


def time_interleaved(
    calls: dict[str, Callable[[], Any] | None], repeats: int = 7
) -> dict[str, list[float] | None]:
    """Time several zero-argument calls round-robin, ``repeats`` rounds.

    ``calls`` maps an implementation name to a thunk, or to ``None`` when that implementation
    is unavailable (its times are then ``None``). Returns the seconds of each call per name.
    """
    times: dict[str, list[float] | None] = {
        name: ([] if thunk is not None else None) for name, thunk in calls.items()
    }
    for _ in range(repeats):
        for name, thunk in calls.items():
            if thunk is not None:
                times[name].append(time_once(thunk))
    return times


def time_scans(
    runs: dict[str, Callable[[], Any] | None], repeats: int = 7
) -> tuple[dict[str, list[float] | None], dict[str, Any]]:
    """Compile and run each thunk once, then time them round-robin (``time_interleaved``).

    Returns the seconds per name and each thunk's output (``None`` for a missing thunk).
    """
    outputs = {name: block(run()) if run is not None else None for name, run in runs.items()}
    return time_interleaved(runs, repeats), outputs


def time_first_and_second(
    calls: dict[str, Callable[[], Any] | None],
    repeats: int = 5,
) -> tuple[dict[str, list[float] | None], dict[str, list[float] | None], dict[str, Any]]:
    """Time a first call (compilation included) and a second call of each thunk, round-robin.

    Before each first call, :func:`jax.clear_caches` empties JAX's compilation caches, so
    every repeat pays tracing and compilation again as a fresh process would; the second call
    right after it finds whatever the first one cached. Returns ``(first, second, results)``:
    seconds per name (``None`` for a missing thunk) and each name's last result.
    """
    first: dict[str, list[float] | None] = {}
    second: dict[str, list[float] | None] = {}
    results: dict[str, Any] = {}
    for name, thunk in calls.items():
        first[name] = [] if thunk is not None else None
        second[name] = [] if thunk is not None else None
    for _ in range(repeats):
        for name, thunk in calls.items():
            if thunk is None:
                continue
            jax.clear_caches()
            first[name].append(time_once(thunk))
            seconds, results[name] = timed(thunk)
            second[name].append(seconds)
    return first, second, results


def scan_steps(
    step: Callable[..., tuple[Any, Any]], num_steps: int, unroll: int = 1
) -> Callable[..., tuple[Any, Any]]:
    """A jitted ``run(carry, *data) -> (carry, outputs)`` doing ``num_steps`` steps in a scan.

    ``step(carry, *data) -> (carry, output)`` is one optimisation step; the outputs of all
    steps are stacked. The data are arguments of the jitted function, not baked-in constants.
    """

    def run(carry: Any, *data: Any) -> tuple[Any, Any]:
        return jax.lax.scan(
            lambda c, _: step(c, *data), carry, None, length=num_steps, unroll=unroll
        )

    return jax.jit(run)


def warm_up_jax() -> None:
    """Start JAX's backend so that its one-off start-up is charged to no implementation."""
    jax.block_until_ready(jax.jit(lambda x: x + 1)(jax.numpy.zeros(2)))


def import_vijax() -> tuple[Any, str]:
    """``(vijax module, "")``, or ``(None, reason)`` when vijax cannot be imported."""
    try:
        import vijax
    except Exception as error:  # any import failure means "no vijax row"
        return None, f"import vijax failed: {error!r}"
    return vijax, ""


def attempt(label: str, fn: Callable[[], Any], errors: list[str]) -> Any:
    """``fn()``, or ``None`` with ``"label: error"`` appended to ``errors`` if it raises."""
    try:
        return fn()
    except Exception as error:  # a failing vijax part must not stop the others
        errors.append(f"{label}: {type(error).__name__}: {error}"[:300])
        return None


def median(values: Sequence[float] | None) -> float | None:
    """Median of ``values``, or ``None`` when there are none."""
    return statistics.median(values) if values else None


def paired_ratio(
    numerators: Sequence[float] | None, denominators: Sequence[float] | None
) -> float | None:
    """Median over repeats of ``numerators[i] / denominators[i]``; ``None`` if either is missing."""
    if not numerators or not denominators:
        return None
    return statistics.median(a / b for a, b in zip(numerators, denominators, strict=True))


@dataclasses.dataclass
class Row:
    """One measured case: medians in seconds (per ``unit``) and the vijax ratios."""

    case: str
    vijax_s: float | None
    hand_s: float | None
    numpyro_s: float | None
    ratio_hand: float | None
    ratio_numpyro: float | None
    repeats: int
    metric: str = ""
    unit: str = "s"
    notes: str = ""
    extra: dict[str, Any] = dataclasses.field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        """The row as a flat dict, ``extra`` fields merged in."""
        fields = dataclasses.asdict(self)
        extra = fields.pop("extra")
        return {**fields, **extra}


def make_row(
    case: str,
    times: dict[str, list[float] | None],
    *,
    per: int = 1,
    metric: str = "",
    unit: str = "s",
    notes: str = "",
    **extra: Any,
) -> Row:
    """Build a :class:`Row` from per-implementation lists of seconds.

    ``per`` divides every time (e.g. the number of steps in a timed scan, giving seconds per
    step). Ratios are medians of the repeat-by-repeat ratios vijax/hand and vijax/NumPyro.
    The per-repeat times themselves are kept in the extra field ``samples``.
    """
    scaled = {
        name: ([t / per for t in times[name]] if times.get(name) else None)
        for name in IMPLEMENTATIONS
    }
    repeats = min((len(v) for v in scaled.values() if v), default=0)
    return Row(
        case=case,
        vijax_s=median(scaled["vijax"]),
        hand_s=median(scaled["hand"]),
        numpyro_s=median(scaled["numpyro"]),
        ratio_hand=paired_ratio(scaled["vijax"], scaled["hand"]),
        ratio_numpyro=paired_ratio(scaled["vijax"], scaled["numpyro"]),
        repeats=repeats,
        metric=metric,
        unit=unit,
        notes=notes,
        extra={**extra, "samples": {name: v for name, v in scaled.items() if v}},
    )


def environment() -> dict[str, Any]:
    """Versions, platform and date of this run."""
    info: dict[str, Any] = {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "jax": jax.__version__,
        "jax_backend": jax.default_backend(),
        "devices": [str(d) for d in jax.devices()],
    }
    for package in ("numpyro", "optax", "vijax"):
        try:
            info[package] = __import__(package).__version__
        except Exception:  # absent or broken packages are reported as None
            info[package] = None
    return info


def format_seconds(seconds: float | None) -> str:
    """Seconds as a short human string (ns, µs, ms or s); ``—`` for missing values."""
    if seconds is None:
        return "—"
    for scale, suffix in ((1.0, "s"), (1e-3, "ms"), (1e-6, "µs")):
        if abs(seconds) >= scale:
            return f"{seconds / scale:.3g} {suffix}"
    return f"{seconds / 1e-9:.3g} ns"


def format_ratio(ratio: float | None) -> str:
    """A ratio as ``1.23×``; ``—`` for missing values."""
    return "—" if ratio is None else f"{ratio:.2f}×"


def markdown_table(name: str, rows: Sequence[Row], env: dict[str, Any]) -> str:
    """Rows as a markdown table, headed by the benchmark name and the environment."""
    lines = [
        f"# {name}",
        "",
        f"{env['date']} · jax {env['jax']} ({env['jax_backend']}) · numpyro {env['numpyro']} · "
        f"vijax {env['vijax']} · {env['cpu_count']} CPUs · {env['platform']}",
        "",
        "| case | vijax | hand-written | NumPyro | vijax / hand | vijax / NumPyro | repeats |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        unit = " · per step" if row.unit == "s/step" else ""
        lines.append(
            f"| {row.case}{unit} | {format_seconds(row.vijax_s)} | {format_seconds(row.hand_s)} | "
            f"{format_seconds(row.numpyro_s)} | {format_ratio(row.ratio_hand)} | "
            f"{format_ratio(row.ratio_numpyro)} | {row.repeats} |"
        )
    notes = [(row.case, row.notes) for row in rows if row.notes]
    extras = [(row.case, _without_samples(row.extra)) for row in rows]
    extras = [(case, extra) for case, extra in extras if extra]
    if notes or extras:
        lines.append("")
    for case, note in notes:
        lines.append(f"- **{case}**: {note}")
    for case, extra in extras:
        shown = ", ".join(f"`{key}` = {_short(key, value)}" for key, value in extra.items())
        lines.append(f"- **{case}**: {shown}")
    return "\n".join(lines) + "\n"


def _without_samples(extra: dict[str, Any]) -> dict[str, Any]:
    """The extra fields worth a line in the markdown (the per-repeat samples are JSON only)."""
    return {key: value for key, value in extra.items() if not key.endswith("samples")}


def _short(key: str, value: Any) -> str:
    """A compact printable form of an extra field (``*_s`` fields are seconds)."""
    if isinstance(value, float) and key.endswith("_s"):
        return format_seconds(value)
    if isinstance(value, float):
        return f"{value:.5g}"
    return "—" if value is None else str(value)


def write_results(name: str, rows: Sequence[Row]) -> str:
    """Write ``results/<name>.json`` (a list of row dicts) and ``results/<name>.md``.

    Every JSON row carries the environment under ``env``. Returns the markdown text.
    """
    env = environment()
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    records = [{**row.as_dict(), "env": env} for row in rows]
    (RESULTS_DIR / f"{name}.json").write_text(json.dumps(records, indent=2) + "\n")
    text = markdown_table(name, rows, env)
    (RESULTS_DIR / f"{name}.md").write_text(text)
    return text
