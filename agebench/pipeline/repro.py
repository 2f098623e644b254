"""`dvc repro` with several training stages at once: the way the cpu track uses every core of a machine.

DVC runs one stage at a time, and a training stage of the cpu profile uses one thread (`train.threads: 1`:
on a busy machine torch's OpenMP threads wait on each other, and one thread per training keeps the
declared core-minutes the CPU time it really spends). On a 2-core machine one core would idle for the whole
of training. DVC releases its repository lock while a stage's command runs, so separate
`dvc --wait-for-lock repro --single-item train@<method>` processes train different methods at once; each
still records its own dvc.lock entry.

The plan, in order:
1. `dvc repro prepare` (download with the pre-flight, then prepare): nothing else runs before the data exist.
2. The training stages, `jobs` at a time, in params.yaml's order, each in its own `dvc` process with its
   output in `<logs>/<stage>.log`.
3. `dvc repro`: everything that is left (generate, evaluate, reference, report), one stage at a time.

A failed training stops nothing that already runs; the others finish (their models are kept), and the
error names each failed stage and its log. Running the command again resumes: finished stages are
up to date, and a training stage resumes from its last checkpoint (`train.checkpoint_every`).
"""

from __future__ import annotations

import dataclasses
import json
import os
import queue
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import IO

from agebench.infra.common import write_json
from agebench.infra.errors import UserError


class ReproError(UserError, RuntimeError):
    """A stage of the pipeline failed (the message names it and its log), or dvc cannot be found."""


@dataclasses.dataclass(frozen=True)
class StageRun:
    """One `dvc` process of the plan: what it ran and how long it took (wall seconds, from the plan's start)."""

    stage: str
    returncode: int
    start_s: float
    end_s: float
    log: str
    #: CPU time (user + system) of the dvc process and every process it waited for (the stage's command):
    #: the core-seconds the stage cost, whatever else ran beside it.
    cpu_s: float = 0.0


@dataclasses.dataclass(frozen=True)
class ReproRun:
    """What `parallel_repro` ran: the jobs it was given, every dvc process, and the whole wall time."""

    jobs: int
    runs: tuple[StageRun, ...]
    wall_s: float
    #: When the plan started, UTC, ISO 8601 to the second.
    started_utc: str = ""
    #: False while the plan runs and after a failure or an interruption (the record of the stages so far).
    complete: bool = True
    #: The records of earlier, interrupted or finished, runs of the plan in the same logs folder, oldest first:
    #: a resumed run keeps the timings of the trainings that ran before it.
    earlier: tuple[dict, ...] = ()

    def to_dict(self) -> dict:
        """JSON-ready record (`<logs>/repro.json`)."""
        return {
            "jobs": self.jobs,
            "started_utc": self.started_utc,
            "wall_s": round(self.wall_s, 1),
            "complete": self.complete,
            "stages": [
                dataclasses.asdict(r) | {"start_s": round(r.start_s, 1), "end_s": round(r.end_s, 1)} for r in self.runs
            ],
            "earlier": list(self.earlier),
        }


def dvc_executable() -> str:
    """The `dvc` beside this interpreter (a venv that is not activated), else the one on PATH."""
    beside = Path(sys.executable).parent / "dvc"
    if beside.exists():
        return str(beside)
    found = shutil.which("dvc")
    if found is None:
        raise ReproError("dvc is not installed: pip install -e '.[dev]' (see the README's Install section)")
    return found


def training_stages(methods: Sequence[str]) -> list[str]:
    """DVC stage names of the methods' trainings (`train@<method>`, dvc.yaml's foreach over `methods`)."""
    return [f"train@{m}" for m in methods]


def parallel_repro(
    project: str | Path,
    methods: Sequence[str],
    jobs: int,
    logs: str | Path,
    dvc: str | None = None,
    echo: Callable[[str], None] = print,
) -> ReproRun:
    """Run the plan of this module's docstring in `project`; returns the record of every dvc process.

    Args:
        project: the folder holding dvc.yaml and params.yaml.
        methods: params.yaml's `methods` (their training stages run `jobs` at a time).
        jobs: trainings at once (>= 1; 1 is plain `dvc repro` in three steps).
        logs: folder for each training's log (created).
        dvc: the dvc executable (default: `dvc_executable()`).
        echo: progress lines (a stage starts, ends, its wall time).
    Writes `<logs>/repro.json` (`ReproRun.to_dict`) after every dvc process and when it returns or raises, so
    the timings of a failed or killed run stay (`complete` false); a previous repro.json moves into `earlier`.
    Raises:
        ReproError: a stage failed; the trainings that could finish did.
    """
    if jobs < 1:
        raise ReproError(f"--jobs must be >= 1, got {jobs}")
    project, logs = Path(project), Path(logs)
    logs.mkdir(parents=True, exist_ok=True)
    dvc = dvc or dvc_executable()
    t0 = time.perf_counter()
    started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    runs: list[StageRun] = []
    lock = threading.Lock()
    earlier = _earlier_records(logs / "repro.json")

    def record(complete: bool) -> ReproRun:
        ordered = tuple(sorted(runs, key=lambda r: r.start_s))
        return ReproRun(jobs, ordered, time.perf_counter() - t0, started, complete, earlier)

    # The stages' `python` is this interpreter, also from a venv that is not activated.
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}

    def run(stage: str, cmd: list[str], log: Path | None) -> StageRun:
        start = time.perf_counter() - t0
        echo(f"repro: {stage} started ({' '.join(cmd[1:])})" + (f", log {log}" if log else ""))
        if log is None:
            rc, cpu = _run_counted(cmd, project, env, None)
        else:
            with open(log, "w") as out:
                rc, cpu = _run_counted(cmd, project, env, out)
        done = StageRun(stage, rc, start, time.perf_counter() - t0, str(log or ""), round(cpu, 1))
        echo(f"repro: {stage} {'done' if rc == 0 else f'FAILED (exit {rc})'} in {done.end_s - start:.0f} s")
        with lock:
            runs.append(done)
            # After every stage: a run killed later (a session's end) keeps the timings so far.
            write_json(logs / "repro.json", record(complete=False).to_dict())
        return done

    def check(records: Sequence[StageRun]) -> None:
        failed = [r for r in records if r.returncode != 0]
        if failed:
            where = "; ".join(f"{r.stage} (exit {r.returncode}{', log ' + r.log if r.log else ''})" for r in failed)
            raise ReproError(f"{len(failed)} stage(s) failed: {where}; fix and run again (finished stages are kept)")

    complete = False
    try:
        _plan(run, check, dvc, methods, jobs, logs)
        complete = True
    finally:
        final = record(complete)
        write_json(logs / "repro.json", final.to_dict())
    return final


def _run_counted(cmd: list[str], cwd: Path, env: Mapping[str, str], out: IO[str] | None) -> tuple[int, float]:
    """Run `cmd`; (exit status, CPU seconds of it and of the descendants it waited for, from `os.wait4`).

    Per process, not `RUSAGE_CHILDREN`: several dvc processes run at once, and each stage's own cost is wanted.
    """
    stderr = None if out is None else subprocess.STDOUT
    proc = subprocess.Popen(cmd, cwd=cwd, env=dict(env), stdout=out, stderr=stderr)
    try:
        _, status, usage = os.wait4(proc.pid, 0)
    except BaseException:
        proc.kill()
        proc.wait()
        raise
    proc.returncode = os.waitstatus_to_exitcode(status)
    return proc.returncode, usage.ru_utime + usage.ru_stime


def _earlier_records(path: Path) -> tuple[dict, ...]:
    """The runs a previous `repro.json` records (its `earlier` ones, then itself), oldest first; () when none.

    An unreadable file is kept aside as `<name>.unreadable` rather than lost or trusted.
    """
    if not path.is_file():
        return ()
    try:
        old = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(old, dict):
            raise ValueError("not a JSON object")
    except ValueError:
        path.replace(path.with_name(path.name + ".unreadable"))
        return ()
    return (*old.pop("earlier", []), old)


def _plan(
    run: Callable[[str, list[str], Path | None], StageRun],
    check: Callable[[Sequence[StageRun]], None],
    dvc: str,
    methods: Sequence[str],
    jobs: int,
    logs: Path,
) -> None:
    check([run("prepare", [dvc, "repro", "prepare"], None)])
    todo: queue.Queue[str] = queue.Queue()
    for stage in training_stages(methods):
        todo.put(stage)
    trained: list[StageRun] = []

    def worker() -> None:
        while True:
            try:
                stage = todo.get_nowait()
            except queue.Empty:
                return
            # --wait-for-lock: the other trainings hold DVC's lock for a moment when they start and finish.
            cmd = [dvc, "--wait-for-lock", "repro", "--single-item", stage]
            trained.append(run(stage, cmd, logs / f"{stage.replace('@', '_')}.log"))

    threads = [threading.Thread(target=worker, daemon=True) for _ in range(min(jobs, todo.qsize()))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    check(trained)
    check([run("rest", [dvc, "repro"], None)])


def default_jobs() -> int:
    """One training per usable core (`os.sched_getaffinity`), as the cpu profile trains on one thread each."""
    return max(1, len(os.sched_getaffinity(0)))
