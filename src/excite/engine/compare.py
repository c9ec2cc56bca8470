"""Train every attention variant x seed and tabulate the results.

Each run lives in ``OUT/<attention>-s<seed>/``. A run whose ``summary.json`` says
``finished`` (with the same config) is skipped on a re-run; an interrupted one is
resumed. The table (``compare.md``, ``compare.csv``, ``compare.png`` in ``OUT``) gives,
per variant: final validation accuracy mean ± sample standard deviation over seeds,
best accuracy, parameters, GMACs per sample, training throughput (samples/s), mean step
time and peak memory (means over seeds).
"""

from __future__ import annotations

import dataclasses
import statistics
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from excite.engine import reports
from excite.engine.builders import build_splits, check_names
from excite.engine.checkpoint import atomic_write_text
from excite.engine.config import TrainConfig, canonical_attention
from excite.engine.rundir import RunDirectory
from excite.engine.train import fit

CSV_COLUMNS = (
    "attention", "seeds", "acc_mean", "acc_std", "best_acc_mean", "params", "gmacs",
    "samples_per_s", "step_time_ms", "peak_memory_mb",
)


def run_compare(base: TrainConfig, attentions: Sequence[str], seeds: Sequence[int], out: str | Path,
                *, log: Callable[[str], None] = print) -> list[dict[str, Any]]:
    """Train (or reuse) every run and write the comparison files; return the table rows."""
    if not attentions:
        raise ValueError("attention list is empty; give e.g. --attention none,se,cbam,eca")
    if len(set(attentions)) != len(attentions):
        raise ValueError(f"attention list has duplicates: {','.join(attentions)}")
    out = Path(out)
    for attention in attentions:  # fail on a bad name or option before any training
        check_names(_variant(base, attention))
    summaries: dict[str, list[dict[str, Any]]] = {a: [] for a in attentions}
    total = len(attentions) * len(seeds)
    done = 0
    for seed in seeds:
        splits = None  # the data depend on the seed only: load them once per seed
        for attention in attentions:
            done += 1
            name = f"{attention}-s{seed}"
            config = dataclasses.replace(_variant(base, attention), seed=seed, name=name, out=str(out))
            run = RunDirectory(out / name)
            summary = run.read_summary()
            status = summary.get("status") if summary is not None else None
            if summary is not None and status == "finished" and _same_config(run, config):
                log(f"[{done}/{total}] {name}: finished earlier, skipped")
                summaries[attention].append(summary)
                continue
            resume = status in ("interrupted", "running") and run.has_state() and _same_config(run, config)
            log(f"[{done}/{total}] {name}: {'resuming' if resume else 'training'}")
            if splits is None:
                splits = build_splits(config)
            summaries[attention].append(fit(config, splits=splits, run_dir=run.path, resume=resume, log=log))
    rows = [_row(a, summaries[a]) for a in attentions]
    title = f"{base.model} on {base.data}, {base.epochs} epochs, {len(seeds)} seed(s)"
    out.mkdir(parents=True, exist_ok=True)
    reports.write_csv(out / "compare.csv", rows, CSV_COLUMNS)
    markdown = format_markdown(rows, title)
    atomic_write_text(out / "compare.md", markdown)
    if reports.plotting_available():  # every seed's point and curve: read each run's metrics.csv
        histories = {a: [reports.read_csv(RunDirectory(s["run_dir"]).metrics_path) for s in summaries[a]
                         if s.get("run_dir") and RunDirectory(s["run_dir"]).metrics_path.is_file()]
                     for a in attentions}
        reports.plot_compare(out / "compare.png", rows, title, summaries=summaries, histories=histories)
    log(markdown)
    return rows


def _same_config(run: RunDirectory, config: TrainConfig) -> bool:
    """The run's saved config equals ``config`` in every field that defines the experiment."""
    try:
        saved = run.read_config_values()
    except Exception:
        return False
    mine = config.to_dict()
    ignore = {"quiet", "workers", "out", "device"}
    return all(saved.get(k) == v for k, v in mine.items() if k not in ignore)


def _mean(values: Sequence[float | None]) -> float | None:
    clean = [v for v in values if v is not None]
    return statistics.fmean(clean) if clean else None


def _variant(base: TrainConfig, attention: str) -> TrainConfig:
    """``base`` with another attention; the attention options do not apply to "none"."""
    options = {} if canonical_attention(attention) == "none" else base.attention_kwargs
    return dataclasses.replace(base, attention=attention, attention_kwargs=dict(options))


def _row(attention: str, summaries: Sequence[dict[str, Any]]) -> dict[str, Any]:
    accs = [s["final_val_acc"] for s in summaries]
    return {
        "attention": attention,
        "seeds": len(summaries),
        "acc_mean": statistics.fmean(accs),
        "acc_std": statistics.stdev(accs) if len(accs) > 1 else None,
        "best_acc_mean": _mean([s["best_val_acc"] for s in summaries]),
        "params": summaries[0]["params"],
        "gmacs": summaries[0]["gmacs"],
        "samples_per_s": _mean([s["train_samples_per_s"] for s in summaries]),
        "step_time_ms": _mean([s["step_time_ms"] for s in summaries]),
        "peak_memory_mb": _mean([s["peak_memory_mb"] for s in summaries]),
    }


def format_markdown(rows: Sequence[dict[str, Any]], title: str = "") -> str:
    """The comparison as a Markdown table."""
    head = ("| attention | val acc (mean ± std) | best acc | params | GMACs | train samples/s "
            "| step ms | peak MB |\n|---|---|---|---|---|---|---|---|\n")
    lines = []
    for r in rows:
        std = f" ± {r['acc_std']:.4f}" if r["acc_std"] is not None else ""
        gmacs = f"{r['gmacs']:.4g}" if r["gmacs"] is not None else "n/a"
        lines.append(
            f"| {r['attention']} | {r['acc_mean']:.4f}{std} | {_f(r['best_acc_mean'], 4)} | "
            f"{r['params']:,} | {gmacs} | {_f(r['samples_per_s'], 1)} | {_f(r['step_time_ms'], 1)} | "
            f"{_f(r['peak_memory_mb'], 0)} |"
        )
    prefix = f"{title}\n\n" if title else ""
    return prefix + head + "\n".join(lines) + "\n"


def _f(value: float | None, digits: int) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"
