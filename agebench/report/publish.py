"""Publishing (`agebench publish`): copy a finished pipeline run's face-free results into `results/<profile>/`.

What is copied (and nothing else; every file holds numbers or charts, never a face, as UTKFace's
licence requires):
- `metrics/<row>.json` and `runtime/<method>.json` (reports/metrics, reports/runtime);
- `leaderboard.md`, `leaderboard.csv` (reports/), and `learns.md`, written here: whether each method
  learns its task (`learns_table`: an age change beyond the identity row's, with the person kept);
- `data.json` and `figures/`: the age histogram and the report's charts (`reports/figures/charts`:
  trade-off, age distributions, breakdowns, training curves);
- kept from the folder's previous contents: the learning curves `agebench curves` published there
  (`KEPT`), which no pipeline run writes;
- `run.json`, written here: the git revision, the tracked files that differed from it (with the
  params.yaml diff, e.g. where the data was read from), DVC's verdict that every stage was up to date,
  the machine (CPU model, cores, memory), torch and Python versions, and the load average the run saw
  when a load log is given.

Refused, with one line and nothing written: a workspace whose pipeline is not up to date (`dvc status`
lists a stage other than an always-run one such as `fgnet`), or whose `leaderboard.md`/`.csv` differ from what the
metrics files render to (a stale or hand-edited report), or a file the list above expects missing.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from agebench.infra.common import atomic_path, write_json
from agebench.infra.errors import UserError
from metrics.keys import KEY_METRIC_ID_RATE

#: The report's face-free chart folder and the other figures published (the age histogram).
CHARTS = Path("reports/figures/charts")
FIGURES = (Path("reports/figures/age_histogram.png"),)
#: Files of the results folder that `agebench curves` publishes, not a pipeline run: a republish keeps them
#: (the learning curves come from their own runs on the validation split; replacing the folder would lose them).
KEPT = ("curves/*.json", "curves/learning_curves.md", "figures/learning_curves.png")


class PublishError(UserError):
    """The workspace cannot be published as is; the message says why and what to run."""


def dvc_status(workspace: Path) -> dict[str, Any]:
    """`dvc status --json` of `workspace`: {stage: [changes]}; {} when everything is up to date."""
    proc = subprocess.run(
        [sys.executable, "-m", "dvc", "status", "--json"], cwd=workspace, capture_output=True, text=True
    )
    if proc.returncode != 0:
        raise PublishError(f"`dvc status` failed in {workspace}: {proc.stderr.strip() or proc.stdout.strip()}")
    return json.loads(proc.stdout or "{}")


def always_run_stages(workspace: Path) -> set[str]:
    """Stages of the workspace's dvc.yaml marked `always_changed` (e.g. `fgnet`): `dvc status` lists them
    in a finished run too, so they do not make it unpublishable."""
    import yaml

    spec = workspace / "dvc.yaml"
    stages = (yaml.safe_load(spec.read_text(encoding="utf-8")) or {}).get("stages", {}) if spec.is_file() else {}
    return {name for name, stage in stages.items() if isinstance(stage, dict) and stage.get("always_changed")}


def _git(workspace: Path, *args: str) -> str:
    proc = subprocess.run(["git", *args], cwd=workspace, capture_output=True, text=True)
    if proc.returncode != 0:
        raise PublishError(f"`git {' '.join(args)}` failed in {workspace}: {proc.stderr.strip()}")
    return proc.stdout


def machine() -> dict[str, Any]:
    """CPU model, logical cores, memory (GB), OS, Python, torch and DVC versions of this machine."""
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(Exception):
        text = Path("/proc/cpuinfo").read_text()
        if m := re.search(r"^model name\s*:\s*(.+)$", text, re.MULTILINE):
            cpu = m.group(1).strip()
    mem_gb = None
    with contextlib.suppress(Exception):
        mem_gb = round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
    out = {"cpu": cpu, "cores": os.cpu_count(), "memory_gb": mem_gb, "os": platform.platform()}
    out["python"] = platform.python_version()
    for pkg in ("torch", "dvc"):
        with contextlib.suppress(Exception):
            from importlib.metadata import version

            out[pkg] = version(pkg)
    return out


def load_summary(load_log: Path) -> dict[str, Any]:
    """Min/median/max of the 1-minute load average in a log of `HH:MM:SS load1 load5 load15` lines."""
    values = sorted(float(line.split()[1]) for line in load_log.read_text().splitlines() if len(line.split()) >= 2)
    if not values:
        return {"samples": 0}
    return {"samples": len(values), "min": values[0], "median": values[len(values) // 2], "max": values[-1]}


def _task_sign(doc: Mapping[str, Any], task: str) -> int:
    """+1 when the task's target group is older than its source (aging), -1 when younger (rejuvenation)."""
    p = doc["params"]
    t = p["tasks"][task]
    bounds = p["groups"][t["scheme"]]
    return 1 if sum(bounds[t["target"]]) > sum(bounds[t["source"]]) else -1


def learns_table(metrics_dir: str | Path, min_id_rate: float = 0.5) -> str:
    """Markdown: does each method learn its task?

    Protocol 3 runs: the track's targets (`agebench.report.targets.targets_table`). Earlier runs: on a
    task whose target is older (aging), a method learns when its `age_gain` 95% interval lies entirely
    above the `identity` row's and its SFace `id_rate` >= `min_id_rate`; on a younger target
    (rejuvenation) the interval must lie entirely below. The identity row's gain is the estimator's
    bias on unchanged faces, so this asks for an age change beyond doing nothing, with the person kept.
    """
    from agebench.report.docs import read_metrics_dir
    from agebench.report.targets import targets_table

    read = read_metrics_dir(Path(metrics_dir))
    if read and all(int(d.get("protocol_version") or 0) >= 3 for d in read):
        try:
            return targets_table(read)
        except ValueError as exc:
            raise PublishError(f"{metrics_dir}: {exc}") from exc
    docs = {d["method"]: d for d in read}
    ident = docs.get("identity")
    if ident is None:
        raise PublishError(f"{metrics_dir} has no identity row: the learning criterion compares against it")
    lines = [
        "| method | task | age_gain (95% CI) | identity's age_gain (95% CI) | intervals apart, right side "
        f"| id_rate (SFace) | id_rate >= {min_id_rate} | learns |",
        "|---|---|---|---|---|---|---|---|",
    ]
    rows = sorted(m for m, d in docs.items() if d.get("kind", "method") == "method" and m not in ("identity", "real"))
    for method in rows:
        for task, t in sorted(docs[method]["tasks"].items()):
            sign = _task_sign(docs[method], task)
            lo, hi = t["ci95"]["age_gain"]
            ilo, ihi = ident["tasks"][task]["ci95"]["age_gain"]
            apart = lo > ihi if sign > 0 else hi < ilo
            kept = t[KEY_METRIC_ID_RATE] >= min_id_rate
            lines.append(
                f"| {method} | {task} | {t['age_gain']:+.2f} [{lo:+.2f}, {hi:+.2f}] "
                f"| {ident['tasks'][task]['age_gain']:+.2f} [{ilo:+.2f}, {ihi:+.2f}] | {'yes' if apart else 'no'} "
                f"| {t['id_rate']:.3f} | {'yes' if kept else 'no'} | {'**yes**' if apart and kept else 'no'} |"
            )
    return "\n".join(lines) + "\n"


def publish(
    workspace: str | Path,
    out: str | Path,
    status: Callable[[Path], Mapping[str, Any]] = dvc_status,
    load_log: str | Path | None = None,
    notes: str = "",
    seed_workspaces: Sequence[str | Path] = (),
) -> list[str]:
    """Copy `workspace`'s finished run into `out` (replaced as a whole); returns the files written.

    With `seed_workspaces` (runs that differ from `workspace` only in `train.seed`, at the same git revision),
    the published metrics are the seeds' merged files (`agebench.pipeline.seeds.merge_seed_dirs`: means over
    seeds, two-level intervals), and the leaderboards and charts are rendered from them here. Charts that read
    more than metrics files (age distributions, training curves) come from `workspace`, the first seed's run.
    run.json then records every run (`runs`: revision, seed, params diff, `logs/repro/repro.json`, the load of
    `logs/load.log`) and the declared budget.

    Args:
        workspace: a checkout where `dvc repro` finished.
        out: e.g. results/cpu.
        status: `dvc status` of a workspace (tests pass a stand-in).
        load_log: optional log of load averages sampled during the run (summarised in run.json).
        notes: free text kept in run.json (how the run was made).
        seed_workspaces: the other training seeds' finished checkouts.
    Raises:
        PublishError: pipeline not up to date, stale leaderboard, an expected file missing, or seed runs
            of another revision.
    """
    ws = Path(workspace).resolve()
    seeds = [Path(w).resolve() for w in seed_workspaces]
    for w in [ws, *seeds]:
        _check_finished(w, status)
    head = _git(ws, "rev-parse", "HEAD").strip()
    for w in seeds:
        if (other := _git(w, "rev-parse", "HEAD").strip()) != head:
            raise PublishError(f"{w} is at {other[:12]}, {ws} at {head[:12]}: publish seeds of one code revision")
    reports = ws / "reports"
    with tempfile.TemporaryDirectory() as merged:
        if seeds:
            from agebench.pipeline.seeds import merge_seed_dirs

            merge_seed_dirs([w / "reports" / "metrics" for w in [ws, *seeds]], merged)
            metrics = Path(merged)
            tables, charts = _render_merged(ws, metrics)
        else:
            metrics = reports / "metrics"
            tables = {n: (reports / n).read_text(encoding="utf-8") for n in ("leaderboard.md", "leaderboard.csv")}
            charts = {p.name: p.read_bytes() for p in sorted((ws / CHARTS).glob("*.png"))}
        run = _run_record(ws, metrics, notes, load_log)
        if seeds:
            run["runs"] = [_seed_run(w) for w in [ws, *seeds]]
        written: list[str] = []
        kept = {str(f.relative_to(out)): f.read_bytes() for pat in KEPT for f in sorted(Path(out).glob(pat))}
        with atomic_path(out, kind="dir") as tmp:
            for folder, src in (("metrics", metrics), ("runtime", reports / "runtime")):
                (tmp / folder).mkdir(parents=True)
                for p in sorted(src.glob("*.json")):
                    shutil.copyfile(p, tmp / folder / p.name)
                    written.append(f"{folder}/{p.name}")
            for name, text in tables.items():
                (tmp / name).write_text(text, encoding="utf-8")
                written.append(name)
            shutil.copyfile(reports / "data.json", tmp / "data.json")
            written.append("data.json")
            (tmp / "learns.md").write_text(learns_table(metrics), encoding="utf-8")
            written.append("learns.md")
            (tmp / "figures").mkdir()
            for name, png in [*charts.items(), *((f.name, (ws / f).read_bytes()) for f in FIGURES)]:
                (tmp / "figures" / name).write_bytes(png)
                written.append(f"figures/{name}")
            write_json(tmp / "run.json", run)
            written.append("run.json")
            for name, data in kept.items():
                if name not in written:
                    (tmp / name).parent.mkdir(parents=True, exist_ok=True)
                    (tmp / name).write_bytes(data)
                    written.append(name)
    return sorted(written)


def _check_finished(ws: Path, status: Callable[[Path], Mapping[str, Any]]) -> None:
    """Refuse a workspace whose pipeline is not up to date, lacks an output, or holds a stale leaderboard."""
    from agebench.report import render_leaderboard

    always = always_run_stages(ws)
    pending = {k: v for k, v in status(ws).items() if k not in always}
    if pending:
        raise PublishError(
            f"the pipeline in {ws} is not up to date ({', '.join(sorted(pending))}); run `dvc repro` there first"
        )
    reports = ws / "reports"
    needed = [reports / "metrics", reports / "runtime", reports / "leaderboard.md", reports / "leaderboard.csv"]
    needed += [reports / "data.json", ws / CHARTS, *(ws / f for f in FIGURES)]
    missing = [str(p.relative_to(ws)) for p in needed if not p.exists()]
    if missing:
        raise PublishError(f"missing in {ws}: {', '.join(missing)}; run `dvc repro` there first")
    for name, text in zip(
        ("leaderboard.md", "leaderboard.csv"), render_leaderboard(reports / "metrics", reports / "runtime")
    ):
        if (reports / name).read_text(encoding="utf-8") != text:
            raise PublishError(
                f"{reports / name} differs from what the metrics files render to; "
                "run `dvc repro report` (leaderboards are never edited by hand)"
            )


def _render_merged(ws: Path, metrics: Path) -> tuple[dict[str, str], dict[str, bytes]]:
    """Leaderboards and face-free charts of merged seed metrics, with `ws`'s per-face files for the rest."""
    from agebench.params.load import load_params
    from agebench.report import build_leaderboard, leaderboard_csv, leaderboard_markdown
    from agebench.report.page import build_report_page

    params = load_params(ws / "params.yaml")
    docs, df = build_leaderboard(metrics, ws / "reports" / "runtime")
    tables = {"leaderboard.md": leaderboard_markdown(df, docs), "leaderboard.csv": leaderboard_csv(df)}
    paths = {"scores": ws / "data" / "scores", "outputs": ws / "outputs", "data": ws / "data" / "prepared"}
    page = build_report_page(params, docs, df, {**paths, "live": ws / "dvclive"})
    return tables, dict(sorted(page.charts.items()))


def _run_record(ws: Path, metrics: Path, notes: str, load_log: str | Path | None) -> dict[str, Any]:
    from agebench.report.docs import read_metrics_dir

    docs = read_metrics_dir(metrics)
    always = always_run_stages(ws)
    run = {
        "profile": docs[0].get("profile") if docs else None,
        "protocol_version": docs[0].get("protocol_version") if docs else None,
        "git_revision": _git(ws, "rev-parse", "HEAD").strip(),
        "metrics_git_revisions": sorted({d.get("git_revision", "") for d in docs}),
        "tracked_files_changed": [
            line[3:] for line in _git(ws, "status", "--porcelain", "--untracked-files=no").splitlines()
        ],
        "params_diff": _git(ws, "diff", "HEAD", "--", "params.yaml"),
        "dvc_status": "up to date" + (f" (always-run stages: {', '.join(sorted(always))})" if always else ""),
        "machine": machine(),
        "notes": notes,
    }
    if load_log is not None:
        run["load_average_1min"] = load_summary(Path(load_log))
    return run


def _trainings(ws: Path) -> dict[str, dict[str, Any]]:
    """Each trained method's last snapshot timing: {method: {"step", "train_seconds", "core_minutes"}}.

    The core-minutes (CPU time of the training process, all its threads) are what the budget declares; the
    snapshots carry them because train.json predates the budget (a resumed training counts from its checkpoint).
    """
    from agebench.pipeline.curves import NoSnapshotsError, snapshot_files
    from agebench.pipeline.train import load_checkpoint

    out: dict[str, dict[str, Any]] = {}
    for folder in sorted(p for p in (ws / "models").glob("*/snapshots") if p.is_dir()):
        try:
            last = snapshot_files(folder.parent)[-1]
        except NoSnapshotsError:
            continue
        timing = load_checkpoint(last).get("summary", {})
        out[folder.parent.name] = {
            "step": timing.get("step"),
            "train_seconds": timing.get("train_seconds"),
            "core_minutes": round(float(timing["cpu_seconds"]) / 60.0, 2) if "cpu_seconds" in timing else None,
        }
    return out


def _seed_run(ws: Path) -> dict[str, Any]:
    """One seed's run: where, its revision and params diff, its budget, each training's steps, wall time and
    core-minutes, and how it ran (jobs, wall, load)."""
    from agebench.params.load import load_params

    params = load_params(ws / "params.yaml")
    record: dict[str, Any] = {
        "workspace": ws.name,
        "seed": params.train.seed,
        "git_revision": _git(ws, "rev-parse", "HEAD").strip(),
        "params_diff": _git(ws, "diff", "HEAD", "--", "params.yaml"),
        "budget_core_minutes": params.train.budget_core_minutes,
        "threads_per_training": params.train.threads,
    }
    if trainings := _trainings(ws):
        record["trainings"] = trainings
    repro = ws / "logs" / "repro" / "repro.json"
    if repro.is_file():
        record["repro"] = json.loads(repro.read_text())
    if (load := ws / "logs" / "load.log").is_file():
        record["load_average_1min"] = load_summary(load)
    return record
