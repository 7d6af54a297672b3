"""The report of ``benchmarks/run.py``: the rows (ours, peer, ratio, target) and the Markdown table.
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

HERE = Path(__file__).resolve().parent
REPO_ROOT = HERE.parent

sys.path.insert(0, str(HERE))

from _measure import summary  # noqa: E402

SIDES = ("ours", "peer")
SCENARIOS = ("throughput", "ceiling", "io_bound", "pickup_latency", "idle", "memory", "import_time")


# --------------------------------------------------------------------------- report


def _fmt(stat: Optional[Dict[str, Any]], digits: int = 2, scale: float = 1.0) -> str:
    if stat is None:
        return "–"
    med, lo, hi = stat["median"] * scale, stat["min"] * scale, stat["max"] * scale
    if lo == hi:
        return f"{med:.{digits}f}"
    return f"{med:.{digits}f} [{lo:.{digits}f}–{hi:.{digits}f}]"


def _metric(results: Dict[str, Any], scenario: str, side: str, key: str) -> Optional[Dict[str, Any]]:
    runs = results["scenarios"].get(scenario, {}).get(side)
    if not isinstance(runs, list):
        return None
    return summary([r.get(key) if isinstance(r, dict) else None for r in runs])


def _peer_cell(results: Dict[str, Any], scenario: str, stat: Optional[Dict[str, Any]], digits: int, scale: float = 1.0) -> str:
    if stat is not None:
        return _fmt(stat, digits, scale)
    sc = results["scenarios"].get(scenario, {})
    why = sc.get("peer_unavailable") or results["meta"].get("peer_unavailable")
    if why:
        return f"unavailable: {why}"
    errors = [str(r["error"]) for r in sc.get("peer", []) if isinstance(r, dict) and r.get("error")]
    return f"failed: {errors[0][:80]}" if errors else "–"


def build_rows(results: Dict[str, Any]) -> List[Dict[str, Any]]:
    rows: List[Dict[str, Any]] = []
    local = results["meta"]["server_kind"] == "local"

    def row(label: str, scenario: str, key: str, digits: int, target: str,
            check: Optional[Callable[[float, Optional[float]], bool]] = None, scale: float = 1.0,
            peer_key: Optional[str] = None, ours_side: str = "ours", ratio: bool = True) -> None:
        ours = _metric(results, scenario, ours_side, key)
        theirs = _metric(results, scenario, "peer", peer_key or key)
        r = None
        if ratio and ours and theirs and theirs["median"]:
            r = ours["median"] / theirs["median"]
        met = None
        if check is not None and ours is not None:
            met = check(ours["median"] * scale, theirs["median"] * scale if theirs else None)
        rows.append({
            "metric": label, "scenario": scenario, "key": key,
            "ours": _fmt(ours, digits, scale), "peer": _peer_cell(results, scenario, theirs, digits, scale),
            "ratio": f"{r:.2f}" if r is not None else "–", "target": target,
            "met": "–" if met is None else ("yes" if met else "**no**"),
            "ours_median": ours["median"] * scale if ours else None,
            "peer_median": theirs["median"] * scale if theirs else None,
        })

    ceiling = _metric(results, "ceiling", "via_proxy", "tasks_per_s")
    ceil_med = ceiling["median"] if ceiling else None
    row("1. Throughput (tasks/s)", "throughput", "tasks_per_s", 1, "≥ peer and ≥ 90 % of ceiling",
        lambda o, p: (p is None or o >= p) and (ceil_med is None or o >= 0.9 * ceil_med))
    row("1. HTTP requests per task", "throughput", "requests_per_task", 3, "≤ 1.05 × peer",
        lambda o, p: p is None or o <= 1.05 * p)
    row("1. Client CPU s per 1000 tasks", "throughput", "cpu_s_per_1000", 2, "≤ 0.5 × peer",
        lambda o, p: p is None or o <= 0.5 * p)
    row("1. Peak client RSS while draining (MB)", "throughput", "peak_rss_mb", 1, "(info)")
    # 2. ceiling
    thr = results["scenarios"].get("throughput", {})
    pct = {}
    for side in SIDES:
        runs = thr.get(side)
        ceils = results["scenarios"].get("ceiling", {}).get("via_proxy")
        if isinstance(runs, list) and isinstance(ceils, list):
            pct[side] = summary([
                (r["tasks_per_s"] / c["tasks_per_s"] * 100.0) if ("tasks_per_s" in r and "tasks_per_s" in c) else None
                for r, c in zip(runs, ceils)
            ])
    direct = _metric(results, "ceiling", "direct", "tasks_per_s")
    via_req = _metric(results, "ceiling", "via_proxy", "requests_per_task")
    rows.append({"metric": "2. Ceiling: requests loop via proxy (tasks/s)", "scenario": "ceiling", "key": "tasks_per_s",
                 "ours": _fmt(ceiling, 1), "peer": "(same loop)", "ratio": "–",
                 "target": f"direct, no proxy: {_fmt(direct, 1)}; loop's req/task {_fmt(via_req, 3)}", "met": "–"})
    ours_pct = pct.get("ours")
    rows.append({"metric": "2. Throughput as % of ceiling (same round)", "scenario": "ceiling", "key": "pct_of_ceiling",
                 "ours": _fmt(ours_pct, 1), "peer": _peer_cell(results, "throughput", pct.get("peer"), 1),
                 "ratio": "–", "target": "≥ 90 %",
                 "met": "–" if ours_pct is None else ("yes" if ours_pct["median"] >= 90 else "**no**")})
    # 3. I/O bound
    io = results["scenarios"].get("io_bound", {})
    bound = io.get("bound_s")
    row("3. I/O-bound wall time (s)", "io_bound", "elapsed_s", 2,
        f"≤ 1.2 × max(ideal {io.get('ideal_s', 0):.2f} s, N/ceiling) = {1.2 * bound:.2f} s" if bound else "≤ 1.2 × ideal",
        (lambda o, p: o <= 1.2 * bound) if bound else None)
    row("3. I/O-bound client CPU s per 1000 tasks", "io_bound", "cpu_s_per_1000", 2, "(info)")
    # 4. pickup latency
    row("4. Pickup latency p50 (ms)", "pickup_latency", "p50_ms", 1,
        "≤ 5 ms (local)" if local else "beside peer (real server: ~100 ms queue check)",
        (lambda o, p: o <= 5.0) if local else None)
    row("4. Pickup latency p99 (ms)", "pickup_latency", "p99_ms", 1, "(info)")
    # 5. idle
    row("5. Idle requests/s per worker", "idle", "idle_requests_per_s_per_worker", 2, "≤ 1 req/s",
        lambda o, p: o <= 1.0)
    row("5. Idle CPU % of a core per worker", "idle", "idle_cpu_pct_per_worker", 3, "≤ 0.1 %",
        lambda o, p: o <= 0.1)
    # 6. memory
    row("6. Peak RSS, 10 types × 10 threads (MB)", "memory", "peak_rss_mb", 1, "≤ 40 MB", lambda o, p: o <= 40.0)
    row("6. Processes in the client", "memory", "processes", 0, "(info)")
    # 7. import
    imp = results["scenarios"].get("import_time", {})
    o, p = imp.get("ours"), imp.get("peer")
    rows.append({"metric": "7. Import time (s, minus bare interpreter)", "scenario": "import_time", "key": "import_s",
                 "ours": f"{o:.3f}" if o is not None else "–",
                 "peer": f"{p:.3f}" if p is not None else _peer_cell(results, "import_time", None, 3),
                 "ratio": f"{o / p:.2f}" if (o is not None and p) else "–", "target": "≤ 0.2 s",
                 "met": "–" if o is None else ("yes" if o <= 0.2 else "**no**")})
    return rows


def markdown(results: Dict[str, Any]) -> str:
    meta = results["meta"]
    lines = [
        f"Server: {meta['server']} · rounds: {meta['rounds']} · quick: {meta['quick']} · nproc {meta['nproc']} · "
        f"load before/after {meta['load_before']} / {meta.get('load_after')} · peer: {meta['peer']}",
        "",
        "| metric | ours (median [min–max]) | peer (median [min–max]) | ours/peer | target | met |",
        "|---|---|---|---|---|---|",
    ]
    for r in build_rows(results):
        lines.append(f"| {r['metric']} | {r['ours']} | {r['peer']} | {r['ratio']} | {r['target']} | {r['met']} |")
    return "\n".join(lines)
