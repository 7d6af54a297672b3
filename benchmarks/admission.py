"""Memory-aware admission against fixed concurrency, on a simulated memory budget.

Usage::

    python benchmarks/admission.py [--quick] [--rounds N] [--ramp-interval S] [--json out.json]

One ``TaskManager`` per setting, in this process, with two workers on LocalConductor (its own
process, started as ``benchmarks/run.py`` does): ``light`` tasks hold 1 MiB and wait 20 ms (I/O),
``heavy`` tasks hold 300 MiB for 0.5 s. The memory is simulated: a task adds its size to a shared
counter while it runs, and the gate's injected reader reports 200 MiB + that counter against a
2 GiB budget. Nothing is allocated, so a setting that would be OOM-killed in a container runs on
here; its figures say what it would have needed.

Settings: fixed concurrency 4, 8, 16 and 32 per worker (no gate), and the gate (``AdmissionGate``:
concurrency 32 as the maximum, memory target 0.8, hard limit 0.9, ``--ramp-interval``, readings every
20 ms) twice: with ``min_slots=1`` (it knows nothing) and ``min_slots=4`` (the concurrency known to be
safe, as the README recommends). Each setting runs three phases on one manager, so that the gate carries its
limits from one phase into the next: ``light`` (only light tasks), ``heavy`` (only heavy ones),
``mixed`` (both at once). Before a phase the workers are paused, the phase's workflows are queued,
and the clock starts when polling resumes; it stops when the phase's last task finishes. In a round,
every setting has its own manager and each phase runs for every setting in turn (the machine's load
then weighs on the settings of a phase alike); rounds alternate the order.

Per phase and setting: tasks/s, the peak of the simulated memory against the budget, and the share
of 10 ms samples above the budget. The table shows each throughput as a ratio to the best fixed
setting and to the best fixed setting that stayed within the budget in that phase (the one a
container could actually run). Figures are medians over the rounds (peaks: the highest).
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import statistics
import sys
import tempfile
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import run as harness  # noqa: E402

from conductor_workers import (  # noqa: E402
    ConductorClient,
    Configuration,
    StartWorkflowRequest,
    Task,
    TaskDef,
    TaskManager,
    WorkflowDef,
    WorkflowTask,
    worker_task,
)
from conductor_workers.admission import AdmissionGate, Reading, ResourceReader  # noqa: E402

MIB = 2**20
BUDGET = 2048 * MIB
BASELINE = 200 * MIB
HEAVY = 300 * MIB
LIGHT = 1 * MIB
LIGHT_WAIT = 0.02
HEAVY_HOLD = 0.5
FIXED = (4, 8, 16, 32)
GATES = {"gate, min 1": 1, "gate, min 4": 4}  # name -> min_slots; the maximum is 32
PHASES = ("light", "heavy", "mixed")
SIZES = {  # phase -> (light tasks, heavy tasks)
    "default": {"light": 2500, "heavy": 48, "mixed": (1250, 48)},
    "quick": {"light": 1500, "heavy": 24, "mixed": (500, 24)},
}


class SimulatedMemory:
    """Baseline + what running tasks hold; the exact peak, and 10 ms samples for 'how often over budget'."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.used = BASELINE
        self.peak = BASELINE
        self.samples = 0
        self.over = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, name="sim-memory", daemon=True)
        self._thread.start()

    def hold(self, size: int) -> None:
        with self._lock:
            self.used += size
            self.peak = max(self.peak, self.used)

    def release(self, size: int) -> None:
        with self._lock:
            self.used -= size

    def reset(self) -> None:
        with self._lock:
            self.peak = self.used
            self.samples = self.over = 0

    def snapshot(self) -> Tuple[int, int, int]:
        with self._lock:
            return self.peak, self.samples, self.over

    def _sample(self) -> None:
        while not self._stop.wait(0.01):
            with self._lock:
                self.samples += 1
                self.over += self.used > BUDGET

    def close(self) -> None:
        self._stop.set()
        self._thread.join()


class SimulatedReader(ResourceReader):
    """What the gate sees: the simulated memory against the budget (a container's anon / memory.max)."""

    signal = "simulated"

    def __init__(self, memory: SimulatedMemory) -> None:
        self.memory = memory

    def read(self) -> Reading:
        return Reading(self.memory.used, BUDGET)


class Setting:
    """One manager with a light and a heavy worker on fresh task types."""

    def __init__(self, client: ConductorClient, name: str, concurrency: int, ramp_interval: Optional[float],
                 min_slots: int = 1) -> None:
        self.client = client
        self.name = name
        tag = uuid.uuid4().hex[:8]
        self.types = {"light": f"adm_light_{tag}", "heavy": f"adm_heavy_{tag}"}
        client.metadata.register_task_defs([
            TaskDef(name=t, retry_count=0, response_timeout_seconds=600, timeout_seconds=0,
                    owner_email="bench@example.com") for t in self.types.values()])
        for t in self.types.values():
            client.metadata.register_workflow_def(
                WorkflowDef(name=f"{t}_wf", version=1, owner_email="bench@example.com", timeout_seconds=0,
                            tasks=[WorkflowTask(name=t, task_reference_name="t",
                                                input_parameters={"i": "${workflow.input.i}"})]),
                overwrite=True)
        self.memory = SimulatedMemory()
        self.done = {"light": 0, "heavy": 0}
        self.lags: List[float] = []
        self._lock = threading.Lock()
        self._target = 0
        self._finished = threading.Event()
        # ramp_interval None: fixed concurrency (no gate)
        self.gate = None if ramp_interval is None else AdmissionGate(
            memory_target=0.8, memory_hard_limit=0.9, min_slots=min_slots, ramp_interval=ramp_interval,
            refresh_interval=0.02, reader=SimulatedReader(self.memory))
        options = dict(concurrency=concurrency, poll_interval=10, batch_poll_timeout=200, paused=True)

        @worker_task(self.types["light"], **options)
        def light(task: Task) -> Dict[str, Any]:
            self._note_lag(task)
            self.memory.hold(LIGHT)
            try:
                time.sleep(LIGHT_WAIT)
            finally:
                self.memory.release(LIGHT)
                self._count("light")
            return {"i": task.input_data.get("i")}

        @worker_task(self.types["heavy"], **options)
        def heavy(task: Task) -> Dict[str, Any]:
            self._note_lag(task)
            self.memory.hold(HEAVY)
            try:
                time.sleep(HEAVY_HOLD)
            finally:
                self.memory.release(HEAVY)
                self._count("heavy")
            return {"i": task.input_data.get("i")}

        self.manager = TaskManager(client, [light, heavy], admission=self.gate)
        self.manager.start_polling()

    def _note_lag(self, task: Task) -> None:
        """Seconds from the poll that handed the task out (its startTime) to its execution: how long a
        task's memory takes to show after its slot was granted."""
        if task.start_time:
            with self._lock:
                self.lags.append(time.time() - task.start_time / 1000.0)

    def _count(self, kind: str) -> None:
        with self._lock:
            self.done[kind] += 1
            if sum(self.done.values()) >= self._target:
                self._finished.set()

    def run_phase(self, phase: str, light_n: int, heavy_n: int) -> Dict[str, Any]:
        self.manager.update_polling_options(paused=True)
        with self._lock:
            self.done = {"light": 0, "heavy": 0}
            self.lags = []
            self._target = light_n + heavy_n
            self._finished.clear()
        jobs = [("light", i) for i in range(light_n)] + [("heavy", i) for i in range(heavy_n)]
        if phase == "mixed":  # interleaved, as they would arrive
            jobs.sort(key=lambda job: job[1] / (light_n if job[0] == "light" else heavy_n))
        with ThreadPoolExecutor(4) as pool:
            ids = list(pool.map(lambda job: self.client.workflows.start(StartWorkflowRequest(
                name=f"{self.types[job[0]]}_wf", version=1, input={"i": job[1]})), jobs))
        assert len(ids) == len(jobs)
        time.sleep(0.3)  # the runners settle into their paused wait
        self.memory.reset()
        started = time.monotonic()
        self.manager.update_polling_options(paused=False)
        timeout = 60 + (light_n + heavy_n) / 10
        if not self._finished.wait(timeout):
            raise RuntimeError(f"{self.name} {phase}: only {self.done} of {light_n}+{heavy_n} tasks in {timeout:.0f}s")
        elapsed = time.monotonic() - started
        peak, samples, over = self.memory.snapshot()
        with self._lock:
            lags = sorted(self.lags)
        result: Dict[str, Any] = {
            "tasks": light_n + heavy_n, "elapsed_s": elapsed, "tasks_per_s": (light_n + heavy_n) / elapsed,
            "peak_mib": peak / MIB, "peak_of_budget": peak / BUDGET, "samples": samples,
            "over_budget_samples": over, "over_budget_share": over / samples if samples else 0.0,
            "start_lag_p50_s": harness.percentile(lags, 50) if lags else None,
            "start_lag_p95_s": harness.percentile(lags, 95) if lags else None,
        }
        if self.gate is not None:
            result["gate"] = {kind: self.gate.state(t) for kind, t in self.types.items()}
        return result

    def verify_and_stop(self) -> bool:
        stopped = self.manager.stop_polling(30)
        deadline = time.monotonic() + 20
        while any(self.client.workflows.running(f"{t}_wf", 1) for t in self.types.values()):
            if time.monotonic() > deadline:
                return False
            time.sleep(0.2)
        self.memory.close()
        if self.gate is not None:
            self.gate.close()
        return stopped


def run_round(client: ConductorClient, names: List[str], sizes: Dict[str, Any], ramp_interval: float,
              reverse: bool) -> Dict[str, Dict[str, Any]]:
    """One round: a fresh manager per setting, all alive (paused between their phases); each phase is
    run for every setting in turn, so that the settings of a phase are measured close together."""
    settings: Dict[str, Setting] = {}
    results: Dict[str, Dict[str, Any]] = {name: {"phases": {}} for name in names}
    try:
        for name in names:
            if name in GATES:
                settings[name] = Setting(client, name, 32, ramp_interval, GATES[name])
            else:
                settings[name] = Setting(client, name, int(name.split()[-1]), None)
        for phase in PHASES:
            light_n, heavy_n = {"light": (sizes["light"], 0), "heavy": (0, sizes["heavy"]),
                                "mixed": sizes["mixed"]}[phase]
            for name in (reversed(names) if reverse else names):
                r = results[name]["phases"][phase] = settings[name].run_phase(phase, light_n, heavy_n)
                harness.log(f"{name:>12} {phase:>5}: {r['tasks_per_s']:7.1f} tasks/s, peak {r['peak_mib']:6.0f} MiB "
                            f"({r['peak_of_budget']:.0%} of budget), over budget in {r['over_budget_share']:.0%} "
                            f"of samples, poll-to-start p50 {(r['start_lag_p50_s'] or 0) * 1000:.0f} ms"
                            + (", gate limits " + ", ".join(f"{k}={v['limit']}" for k, v in r["gate"].items())
                               if "gate" in r else ""))
    finally:
        for name, setting in settings.items():
            results[name]["verified_complete"] = setting.verify_and_stop()
    return results


def median_of(runs: List[Dict[str, Any]], phase: str, key: str) -> float:
    return statistics.median(run["phases"][phase][key] for run in runs)


def table(results: Dict[str, List[Dict[str, Any]]]) -> str:
    names = [f"fixed {c}" for c in FIXED] + list(GATES)
    lines = []
    best: Dict[str, float] = {}
    best_safe: Dict[str, Tuple[float, str]] = {}
    for phase in PHASES:
        rates = {n: median_of(results[n], phase, "tasks_per_s") for n in names if n not in GATES}
        best[phase] = max(rates.values())
        safe = {n: r for n, r in rates.items() if max(run["phases"][phase]["peak_mib"] for run in results[n]) * MIB <= BUDGET}
        best_safe[phase] = max(((r, n) for n, r in safe.items()), default=(float("nan"), "none"))
    header = "| setting | " + " | ".join(f"{p}: tasks/s (× best fixed, × best within budget)" for p in PHASES) + " |"
    lines += [header, "|---|" + "---|" * len(PHASES)]
    for n in names:
        cells = []
        for phase in PHASES:
            rate = median_of(results[n], phase, "tasks_per_s")
            cells.append(f"{rate:.1f} ({rate / best[phase]:.2f}, {rate / best_safe[phase][0]:.2f})")
        lines.append(f"| {n} | " + " | ".join(cells) + " |")
    lines.append("")
    lines.append("| setting | " + " | ".join(f"{p}: peak MiB (of 2048), samples over budget" for p in PHASES) + " |")
    lines.append("|---|" + "---|" * len(PHASES))
    for n in names:
        cells = []
        for phase in PHASES:
            peak = max(run["phases"][phase]["peak_mib"] for run in results[n])
            over = statistics.median(run["phases"][phase]["over_budget_share"] for run in results[n])
            cells.append(f"{peak:.0f} ({peak * MIB / BUDGET:.0%}), {over:.0%}")
        lines.append(f"| {n} | " + " | ".join(cells) + " |")
    lines.append("")
    lines.append("Best fixed setting within budget per phase: "
                 + ", ".join(f"{p} {best_safe[p][1]}" for p in PHASES) + ".")
    for gate in GATES:
        verdicts = []
        for phase in PHASES:
            rate = median_of(results[gate], phase, "tasks_per_s")
            safe_rate, safe_name = best_safe[phase]
            verdicts.append(f"{phase} {rate / safe_rate:.0%} of {safe_name}")
        gate_peak = max(run["phases"][p]["peak_mib"] for run in results[gate] for p in PHASES)
        lines.append(f"{gate}: " + ", ".join(verdicts) + f"; peak {gate_peak:.0f} MiB of 2048 "
                     f"({'within' if gate_peak * MIB <= BUDGET else 'OVER'} budget).")
    return "\n".join(lines)


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller phases, one round (about a minute)")
    parser.add_argument("--rounds", type=int, default=None, help="rounds (default 2; 1 with --quick)")
    parser.add_argument("--ramp-interval", type=float, default=0.1,
                        help="the gate's ramp_interval in seconds (default 0.1: the simulated tasks reach their "
                             "peak memory at once)")
    parser.add_argument("--json", type=Path, default=None, help="write the results here as JSON")
    args = parser.parse_args(argv)
    sizes = SIZES["quick" if args.quick else "default"]
    if args.rounds is None:
        args.rounds = 1 if args.quick else 2
    tmp = Path(tempfile.mkdtemp(prefix="cw-adm-bench-"))
    server = harness.Server("local", tmp)
    client = ConductorClient(Configuration(server_url=server.url))
    names = [f"fixed {c}" for c in FIXED] + list(GATES)
    results: Dict[str, List[Dict[str, Any]]] = {n: [] for n in names}
    started = time.monotonic()
    try:
        for round_index in range(args.rounds):
            for name, result in run_round(client, names, sizes, args.ramp_interval, round_index % 2 == 1).items():
                results[name].append(result)
    finally:
        client.close()
        server.stop()
    text = table(results)
    print(f"\nAdmission gate vs fixed concurrency: simulated memory, budget 2048 MiB, baseline 200 MiB; light "
          f"{sizes['light']} tasks (1 MiB, {LIGHT_WAIT * 1000:.0f} ms), heavy {sizes['heavy']} tasks (300 MiB, "
          f"{HEAVY_HOLD:g} s), mixed {sizes['mixed'][0]}+{sizes['mixed'][1]}; gate ramp_interval "
          f"{args.ramp_interval:g}s; {args.rounds} round(s), {os.cpu_count()} cores, {server.version}, "
          f"{time.monotonic() - started:.0f} s\n")
    print(text)
    incomplete = [n for n in names if not all(r["verified_complete"] for r in results[n])]
    if incomplete:
        print(f"\nNOT every workflow completed for: {', '.join(incomplete)}")
    out = args.json or (HERE / "results" / f"admission-{datetime.datetime.now():%Y%m%d-%H%M%S}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"sizes": sizes, "ramp_interval": args.ramp_interval, "results": results}, indent=1,
                              default=str))
    harness.log(f"results in {out}")
    return 1 if incomplete else 0


if __name__ == "__main__":
    sys.exit(main())
