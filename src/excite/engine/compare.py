"""Train every attention variant x seed and tabulate the results.

Each run lives in ``OUT/<attention>-s<seed>/``. Before anything trains, every folder
that already holds a run is checked against the config it would get now: a run with the
same config (every field but those that do not change results: ``quiet``, ``workers``,
``out``, ``device``, ``log_interval``, ``tensorboard``, ``save_every``) is reused when it
finished and resumed otherwise; a run with another config (``--epochs 2`` then ``--epochs
1``) is never overwritten: compare refuses, naming the folder and the keys that differ.
The log says which runs were reused. The table (``compare.md``, ``compare.csv``,
``compare.png`` in ``OUT``) gives, per variant: final validation accuracy mean ± sample
standard deviation over seeds, best accuracy, parameters, GMACs per sample, training
throughput (samples/s), mean step time and peak memory (means over seeds).
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
from excite.engine.config import RESUME_OVERRIDABLE, TrainConfig, canonical_attention, dump_yaml
from excite.engine.rundir import RunDirectory
from excite.engine.train import fit
from excite.errors import ExciteError, require

CSV_COLUMNS = (
    "attention", "seeds", "acc_mean", "acc_std", "best_acc_mean", "params", "gmacs",
    "samples_per_s", "step_time_ms", "peak_memory_mb",
)

#: config fields a reused run may differ in (they do not change its results)
NOT_COMPARED = RESUME_OVERRIDABLE - {"epochs"}


@dataclasses.dataclass(frozen=True)
class PlannedRun:
    """One run of a comparison and what to do with it.

    Attributes:
        attention: the variant.
        config: its config (seed, name and out set).
        run: its folder.
        action: ``"train"`` (a new run), ``"resume"`` (same config, not finished) or
            ``"reuse"`` (same config, finished).
    """

    attention: str
    config: TrainConfig
    run: RunDirectory
    action: str


def run_compare(base: TrainConfig, attentions: Sequence[str], seeds: Sequence[int], out: str | Path,
                *, log: Callable[[str], None] = print) -> list[dict[str, Any]]:
    """Train (or reuse) every run and write the comparison files; return the table rows.

    Raises:
        ValueError: an empty or repeated attention list, unknown names.
        ExciteError: a folder holding a run with another config, or a run that diverged
            earlier with this one (nothing is trained then).
    """
    if not attentions:
        raise ValueError("attention list is empty; give e.g. --attention none,se,cbam,eca")
    if len(set(attentions)) != len(attentions):
        raise ValueError(f"attention list has duplicates: {','.join(attentions)}")
    out = Path(out)
    for attention in attentions:  # fail on a bad name or option before any training
        check_names(_variant(base, attention))
    plan = plan_runs(base, attentions, seeds, out)
    summaries: dict[str, list[dict[str, Any]]] = {a: [] for a in attentions}
    splits: dict[int, Any] = {}  # the data depend on the seed only: load them once per seed
    for done, item in enumerate(plan, 1):
        name, config = item.run.path.name, item.config
        if item.action == "reuse":
            log(f"[{done}/{len(plan)}] {name}: finished earlier, skipped (same config: its results are reused)")
            summaries[item.attention].append(item.run.read_summary() or {})
            continue
        log(f"[{done}/{len(plan)}] {name}: {'resuming' if item.action == 'resume' else 'training'}")
        if config.seed not in splits:
            splits = {config.seed: build_splits(config)}
        summaries[item.attention].append(fit(config, splits=splits[config.seed], run_dir=item.run.path,
                                             resume=item.action == "resume", log=log))
    reused = [item.run.path.name for item in plan if item.action == "reuse"]
    if reused:
        log(f"reused {len(reused)} finished run(s) with the same config: {', '.join(reused)}")
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


def plan_runs(base: TrainConfig, attentions: Sequence[str], seeds: Sequence[int],
              out: Path) -> list[PlannedRun]:
    """What to do with each run (seed by seed), checked before anything trains.

    Raises:
        ExciteError: a folder holds a run with another config (the message names the
            first such folder and its differing keys), or one that diverged with this
            config.
    """
    plan, conflicts = [], []
    for seed in seeds:
        for attention in attentions:
            name = f"{attention}-s{seed}"
            config = dataclasses.replace(_variant(base, attention), seed=seed, name=name, out=str(out))
            run = RunDirectory(out / name)
            if not run.holds_run():
                plan.append(PlannedRun(attention, config, run, "train"))
                continue
            differing = config_differences(run, config)
            if differing:
                conflicts.append((run, differing))
                continue
            status = run.status()
            if status == "diverged":
                raise ExciteError(f"{run.path} diverged earlier with this config (see its summary.json); "
                                  "lower --lr, or remove that folder to train it again")
            plan.append(PlannedRun(attention, config, run, "reuse" if status == "finished" else "resume"))
    if conflicts:
        run, differing = conflicts[0]
        more = f"; {len(conflicts) - 1} more folder(s) differ too" if len(conflicts) > 1 else ""
        raise ExciteError(
            f"{run.path} holds a run with another config ({'; '.join(differing)}){more}; "
            "nothing was trained: use the same settings to reuse it, another --out, or remove "
            "the folder to train it again"
        )
    return plan


def config_differences(run: RunDirectory, config: TrainConfig) -> list[str]:
    """The config keys where the run's saved ``config.yaml`` differs from ``config``
    (``"key: saved there, now"``; fields in :data:`NOT_COMPARED` are not compared, and a
    field the saved file lacks counts as its default). Empty: the same experiment."""
    yaml = require("yaml", extra="train", purpose="reading YAML configs")
    try:
        saved = run.read_config_values()
    except ExciteError as exc:
        return [f"config.yaml unreadable: {exc}"]
    mine = yaml.safe_load(dump_yaml(config))  # through YAML, as the saved one went
    defaults = yaml.safe_load(dump_yaml(TrainConfig()))
    differing = []
    for key in [*mine, *(k for k in saved if k not in mine)]:
        if key in NOT_COMPARED:
            continue
        there = saved.get(key, defaults.get(key))
        if key == "attention":
            there = canonical_attention(there)
        if there != mine.get(key):
            differing.append(f"{key}: {there!r} there, {mine.get(key)!r} now")
    return differing


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
