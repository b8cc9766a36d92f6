"""Scale-to-zero: what the InferenceService autoscaler's policies cost and how many requests
wait for a cold start, on three traces, against the offline optimum and the frontier of fixed
keep-alives. docs/scale-to-zero.md states the model, its assumptions and the figures.

    python benchmarks/scale_to_zero.py --traces DIR [--cold-start bimodal|SECONDS|FILE.csv]
        [--metrics rps,concurrency] [--out DIR] [--skip-cold-start]

Part (a), real processes (`cold_start_overhead`): a request sent through `sparsam activator`
the moment a model server process starts; its answer time against the server's own time to
ready, measured side by side in each trial (`--trials`, default 20). Target: the overhead
p50 < 200 ms and p99 < 1 s.

Part (b) replays, through `sparsam.simulate.serving` (which drives the operator's own
`decisions.scaling.decide_scaling` with a simulated clock), three fleets:

- **conversation**: azure_llm_conv_2023.csv in `--traces` (19,366 requests, about 58
  minutes) thinned into `--services` services (request -> service i with p ~ 1/i^`--zipf`).
- **bursty**: `simulate.fleets.bursty_fleet` (about 73 % of seconds without a request, bursts
  of about 20 requests, idle gaps up to 10 minutes, Zipf rates).
- **periodic**: `simulate.fleets.periodic_fleet` (services called every 1 to 15 minutes with
  jitter).

Each replica's boot is drawn from `--cold-start` (default: bimodal, p50 about 23 s, p99 about
52 s); policies are told only its median. Policies: `fixed_5m` (the CRD's default),
`fixed_cold_start` (keep-alive = the nominal cold start), `adaptive` and `adaptive_2x`
(decisions.keepalive), `keep_warm` (min 1), and the frontier: fixed keep-alives from 10 s to
10 min. Every result is a point (cost / optimum, fraction of requests cold, p50/p99 added
latency); `--out` writes the frontier as a PNG and JSON. Prints the assumptions, a markdown
table, the frontier table and the targets (`DEFAULT_POLICY` on every trace: on or below the
frontier; at most the cost of keep-alive = cold start with 30 % fewer cold requests; no
request cut; every policy >= 1x the optimum; on the periodic fleet 80 % fewer cold requests
than the frontier at equal cost), then one JSON line last with `met` flags. Asserts nothing.
3 to 6 minutes on a shared 2-core machine (`--metrics rps` alone: about half).

Anchors: a fixed keep-alive is within 2x of the offline optimum (ski rental);
SPES (2024) reports about 50 % fewer cold starts than a fixed keep-alive.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sparsam.api.inferenceservice import ScalingMetric
from sparsam.simulate.coldstart import ColdStarts, bimodal_default, load_cold_starts
from sparsam.simulate.coldstart import fixed as fixed_cold_start
from sparsam.simulate.fleets import (
    BurstyFleet,
    PeriodicFleet,
    bursty_fleet,
    idle_fraction,
    periodic_fleet,
)
from sparsam.simulate.serving import (
    AZURE_LLM_FILE,
    DEFAULT_POLICY,
    NAMED_POLICIES,
    Scenario,
    ServiceModel,
    World,
    frontier_name,
    load_azure_llm,
    markdown,
    run_scenario,
    split_fleet,
)
from sparsam.simulate.traces import SimulationError, default_trace_dir

ANCHORS = {
    "fixed_keep_alive_ski_rental": "<= 2x the offline optimum",
    "spes_2024": "about 50 % fewer cold starts than fixed keep-alive",
}


def cold_start_overhead(trials: int, work: Path) -> dict[str, Any]:
    """Part (a), real processes: what the activator adds to a model server's own cold start.

    Per trial, at t0 a model server process starts (`python -m sparsam_trainer serve`, a small
    exported CNN, one thread) where `sparsam activator --backend` routes the service, and a
    request is sent through the activator at the same moment. The baseline, side by side in the
    same trial: the server's own time to ready, from polling its /readyz directly every 5 ms.
    The overhead is the held request's answer time minus that: the activator's hold, its
    retries while the server refuses connections or answers 503 (loading), and the forward.
    Kubernetes' part (the wake annotation, the Deployment, scheduling) is not in it: that is
    the cluster's own start-up, exercised by tests/integration/test_inferenceservice_controller.py.
    """
    model_dir = _export_tiny_model(work / "model")
    activator_port, server_port = _free_port(), _free_port()
    route = f"http://127.0.0.1:{activator_port}/bench/digits/v1/predict"
    body = json.dumps({"instances": [[[0] * 28] * 28]}).encode()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    activator = subprocess.Popen(
        [sys.executable, "-m", "sparsam.cli", "activator", "--host=127.0.0.1",
         f"--port={activator_port}", f"--backend=bench/digits=127.0.0.1:{server_port}",
         "--hold-timeout=120"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env,
    )  # fmt: skip
    ready_s: list[float] = []
    answered_s: list[float] = []
    direct_ms: list[float] = []
    routed_ms: list[float] = []
    try:
        _wait(lambda: _status(f"http://127.0.0.1:{activator_port}/-/healthz") == 200, 30)
        for _ in range(trials):
            answer: dict[str, float] = {}
            client = threading.Thread(target=_timed_post, args=(route, body, answer))
            t0 = time.perf_counter()
            server = subprocess.Popen(
                [sys.executable, "-m", "sparsam_trainer", "serve", f"--model-dir={model_dir}",
                 "--host=127.0.0.1", f"--port={server_port}", "--threads=1"],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env,
            )  # fmt: skip
            client.start()
            try:
                _wait(lambda: _status(f"http://127.0.0.1:{server_port}/readyz") == 200, 120, 0.005)
                ready_s.append(time.perf_counter() - t0)
                client.join(130)
                if answer.get("status") != 200:
                    raise RuntimeError(f"the held request got {answer}")
                answered_s.append(answer["at"] - t0)
                # The warm path, for scale: one request direct, one through the activator.
                for url, into in (
                    (f"http://127.0.0.1:{server_port}/v1/predict", direct_ms),
                    (route, routed_ms),
                ):
                    timing: dict[str, float] = {}
                    start = time.perf_counter()
                    _timed_post(url, body, timing)
                    into.append((timing["at"] - start) * 1000)
            finally:
                server.terminate()
                server.wait(30)
    finally:
        activator.terminate()
        activator.wait(30)
    overhead_ms = [(a - r) * 1000 for a, r in zip(answered_s, ready_s, strict=True)]
    result = {
        "trials": trials,
        "server_ready_s": _p50_p99(ready_s, 3),
        "answered_through_activator_s": _p50_p99(answered_s, 3),
        "overhead_ms": {**_p50_p99(overhead_ms, 1), "max": round(max(overhead_ms), 1)},
        "warm_request_ms": {
            "direct_p50": _p50_p99(direct_ms, 2)["p50"],
            "through_activator_p50": _p50_p99(routed_ms, 2)["p50"],
        },
        "target_ms": {"p50": 200, "p99": 1000},
    }
    p = result["overhead_ms"]
    result["met"] = p["p50"] < 200 and p["p99"] < 1000
    return result


def _export_tiny_model(out: Path) -> Path:
    import torch  # the trainer extra; only part (a) needs it

    from sparsam_trainer.export import export_model

    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Conv2d(1, 8, 3), torch.nn.ReLU(), torch.nn.Flatten(), torch.nn.LazyLinear(10)
    )
    example = torch.rand(2, 1, 28, 28)
    model(example)  # materialise the lazy layer
    spec = {"kind": "image", "shape": [1, 28, 28], "scale": 255.0}
    labels = [str(d) for d in range(10)]
    return export_model(model.eval(), "bench-digits", labels, spec, (example,), {}, out)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _status(url: str) -> int | None:
    try:
        with urllib.request.urlopen(url, timeout=2) as reply:  # noqa: S310 - loopback http
            status: int = reply.status
            return status
    except urllib.error.HTTPError as error:
        return error.code
    except OSError:
        return None


def _wait(check: Callable[[], bool], timeout: float, every: float = 0.05) -> None:
    deadline = time.perf_counter() + timeout
    while not check():
        if time.perf_counter() > deadline:
            raise TimeoutError(f"not ready within {timeout:g}s")
        time.sleep(every)


def _timed_post(url: str, body: bytes, out: dict[str, float]) -> None:
    request = urllib.request.Request(  # noqa: S310 - loopback http
        url, body, {"Content-Type": "application/json"}, method="POST"
    )
    try:
        with urllib.request.urlopen(request, timeout=130) as reply:  # noqa: S310
            reply.read()
            out["status"] = reply.status
    except urllib.error.HTTPError as error:
        out["status"] = error.code
    out["at"] = time.perf_counter()


def _p50_p99(values: list[float], digits: int) -> dict[str, float]:
    ordered = sorted(values)

    def at(q: float) -> float:
        return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], digits)

    return {"p50": at(0.5), "p99": at(0.99)}


def _cold_start(text: str) -> ColdStarts:
    """`bimodal` (the default), a number of seconds (fixed), or a CSV of measured load times."""
    if text == "bimodal":
        return bimodal_default()
    try:
        return fixed_cold_start(float(text))
    except ValueError:
        pass
    return load_cold_starts(Path(text))


def _metrics(text: str) -> list[ScalingMetric]:
    chosen: list[ScalingMetric] = []
    for part in text.split(","):
        if part == "rps":
            chosen.append("rps")
        elif part == "concurrency":
            chosen.append("concurrency")
        elif part:
            raise argparse.ArgumentTypeError(f"unknown metric {part!r} (rps, concurrency)")
    return chosen


def targets_of(s: Scenario, periodic: bool) -> dict[str, Any]:
    """The targets for DEFAULT_POLICY on one scenario, each with its figures and `met`."""
    rows = s.as_dict()["policies"]
    mine, fixed = rows[DEFAULT_POLICY], rows["fixed_cold_start"]
    cost = mine["vs_optimum"] or 0.0
    frontier_cold = s.frontier_cold_at(cost)
    result: dict[str, Any] = {
        "on_or_below_frontier": {
            "vs_optimum": cost,
            "cold_fraction": mine["cold_fraction"],
            "frontier_cold_fraction_at_same_cost": round(frontier_cold, 5),
            "met": mine["cold_fraction"] <= frontier_cold + 1e-12,
        },
        "30pct_fewer_cold_than_keep_alive_eq_cold_start": {
            "vs_optimum": cost,
            "fixed_cold_start_vs_optimum": fixed["vs_optimum"],
            "cold_requests": mine["cold_requests"],
            "fixed_cold_start_cold_requests": fixed["cold_requests"],
            "cold_vs_fixed": _share(mine["cold_requests"], fixed["cold_requests"]),
            "met": cost <= (fixed["vs_optimum"] or 0.0)
            and mine["cold_requests"] <= 0.7 * fixed["cold_requests"],
        },
        "no_request_cut": {
            "cut_in_flight": {name: row["cut_in_flight"] for name, row in rows.items()},
            "met": all(row["cut_in_flight"] == 0 for row in rows.values()),
        },
        "every_policy_at_least_optimum": {
            "lowest_vs_optimum": min(row["vs_optimum"] or 0.0 for row in rows.values()),
            "met": all((row["vs_optimum"] or 0.0) >= 1.0 for row in rows.values()),
        },
    }
    if periodic:
        result["periodic_80pct_fewer_cold_than_frontier"] = {
            "cold_fraction": mine["cold_fraction"],
            "frontier_cold_fraction_at_same_cost": round(frontier_cold, 5),
            "met": mine["cold_fraction"] <= 0.2 * frontier_cold + 1e-12,
        }
    return result


def plot(scenarios: list[Scenario], path: Path) -> None:
    """One panel per scenario: the fixed keep-alive frontier (cost / optimum against the
    fraction of cold requests, each point labelled with its keep-alive) and every named
    policy as a marker."""
    import matplotlib  # a test dependency; only the plot needs it

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = min(3, len(scenarios))
    rows = -(-len(scenarios) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(5.2 * cols, 4.2 * rows), squeeze=False)
    panels = [ax for row in axes for ax in row]
    for ax in panels[len(scenarios) :]:
        ax.set_visible(False)
    for ax, s in zip(panels, scenarios, strict=False):
        points = s.frontier_points()
        ax.plot(
            [c for _, c, _ in points],
            [f for _, _, f in points],
            "-o",
            color="grey",
            label="fixed keep-alive",
            markersize=4,
        )
        for keep, c, f in points:
            ax.annotate(
                f"{keep:g}s",
                (c, f),
                textcoords="offset points",
                xytext=(4, 3),
                fontsize=7,
                color="grey",
            )
        for name in NAMED_POLICIES:
            row = s.row(name)
            ax.plot(row["vs_optimum"], row["cold_fraction"], "s", label=name)
        ax.set_title(f"{s.name} ({s.metric}, {s.services} services)", fontsize=10)
        ax.set_xlabel("cost / offline optimum")
        ax.set_ylabel("fraction of requests cold")
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def frontier_table(scenarios: list[Scenario]) -> str:
    lines = [
        "| trace | metric | policy | keep-alive | x optimum | cold fraction | added p50 s"
        " | added p99 s |",
        "|---|---|---|---:|---:|---:|---:|---:|",
    ]
    for s in scenarios:
        frontier = [frontier_name(k) for k in s.frontier]
        for name in [*NAMED_POLICIES, *frontier]:
            row = s.row(name)
            keep = {"fixed_5m": "300s", "fixed_cold_start": f"{s.nominal_cold_start_s:g}s"}.get(
                name, name.removeprefix("keep_") if name in frontier else "-"
            )
            lines.append(
                f"| {s.name} | {s.metric} | {name} | {keep} | {row['vs_optimum']:.3f}"
                f" | {row['cold_fraction']:.3f} | {row['added_p50_s']:.1f}"
                f" | {row['added_p99_s']:.1f} |"
            )
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--traces", type=Path, default=default_trace_dir())
    parser.add_argument(
        "--cold-start",
        default="bimodal",
        help="bimodal (p50~23s, p99~52s), a fixed number of seconds, or a CSV of load times",
    )
    parser.add_argument("--metrics", type=_metrics, default=["rps"])
    parser.add_argument("--services", type=int, default=100, help="conversation fleet size")
    parser.add_argument("--zipf", type=float, default=1.0, help="conversation fleet skew")
    parser.add_argument("--bursty-services", type=int, default=BurstyFleet().services)
    parser.add_argument("--periodic-services", type=int, default=PeriodicFleet().services)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--rps-target", type=float, default=2.0, help="rps per replica")
    parser.add_argument(
        "--concurrency-target", type=float, default=8.0, help="requests in flight per replica"
    )
    parser.add_argument("--max-replicas", type=int, default=4, help="per service")
    parser.add_argument("--pass-interval", type=int, default=5, help="controller pass, s")
    parser.add_argument("--prefill-tps", type=float, default=5000.0, help="tokens/s")
    parser.add_argument("--decode-tps", type=float, default=50.0, help="tokens/s")
    parser.add_argument("--out", type=Path, default=None, help="folder for the PNG and JSON")
    parser.add_argument(
        "--skip-cold-start", action="store_true", help="skip part (a), the real cold start"
    )
    parser.add_argument("--trials", type=int, default=20, help="part (a) cold starts")
    args = parser.parse_args()
    try:
        cold_starts = _cold_start(args.cold_start)
    except SimulationError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if min(args.services, args.bursty_services, args.periodic_services) < 1:
        print("error: every fleet needs at least one service", file=sys.stderr)
        return 2
    trace = args.traces / AZURE_LLM_FILE
    if not trace.is_file():
        print(f"no trace at {trace}: the shared data folder is beside the repository in CI")
        print(json.dumps({"benchmark": "scale_to_zero", "skipped": f"no trace at {trace}"}))
        return 2
    started = time.perf_counter()
    cold_start = None
    if not args.skip_cold_start:
        with tempfile.TemporaryDirectory() as work:
            cold_start = cold_start_overhead(args.trials, Path(work))
        print(f"cold start (a): {json.dumps(cold_start)}")
    try:
        requests = load_azure_llm(trace)
    except SimulationError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    bursty_shape = BurstyFleet(services=args.bursty_services)
    periodic_shape = PeriodicFleet(services=args.periodic_services)
    fleets = {
        "conversation": split_fleet(requests, args.services, args.zipf, args.seed),
        "bursty": bursty_fleet(bursty_shape, args.seed),
        "periodic": periodic_fleet(periodic_shape, args.seed),
    }
    model = ServiceModel(args.prefill_tps, args.decode_tps)
    nominal = round(cold_starts.median_s)
    world = World(nominal, args.pass_interval, 60, model, cold_starts, seed=args.seed)
    targets = {"rps": args.rps_target, "concurrency": args.concurrency_target}
    scenarios: list[Scenario] = []
    for metric in args.metrics:  # one row of the figure per metric
        for name, fleet in fleets.items():
            scenarios.append(
                run_scenario(name, fleet, metric, targets[metric], args.max_replicas, world)
            )
    sim_wall = time.perf_counter() - started

    mean_service = sum(model.service_s(r) for r in requests) / max(1, len(requests))
    assumptions = {
        "cost": "GPU-seconds + each wake's first wait (s) + replica-s short of the oracle"
        " beyond the first replica",
        "optimum": "knows every request; no request waits; boots cost the mean cold start;"
        " per replica layer busy + C + sum min(gap, C)",
        "cold_start": f"{cold_starts.name}: drawn per replica boot; p50"
        f" {cold_starts.quantile(0.5):.1f}s p99 {cold_starts.quantile(0.99):.1f}s mean"
        f" {cold_starts.mean_s:.1f}s; policies are told {nominal}s",
        "in_flight": "the activator's in-flight count reaches the decision (rule 9)",
        "service_time": f"context/{args.prefill_tps:g} + generated/{args.decode_tps:g} s"
        f" (conversation mean {mean_service:.2f}s); no queueing at a ready replica",
        "targets_per_replica": {"rps": args.rps_target, "concurrency": args.concurrency_target},
        "max_replicas": args.max_replicas,
        "pass_interval_s": args.pass_interval,
        "conversation": f"{AZURE_LLM_FILE}, {len(requests)} requests, split into"
        f" {args.services} services (p ~ 1/i^{args.zipf:g}, seed {args.seed})",
        "bursty": f"{bursty_shape}, seed {args.seed}; idle seconds"
        f" {idle_fraction(fleets['bursty'], bursty_shape.horizon_s):.3f}",
        "periodic": f"{periodic_shape}, seed {args.seed}",
        "default_policy": DEFAULT_POLICY,
        "start": "every policy starts at zero replicas (keep_warm boots at the horizon start)",
    }
    print("assumptions:")
    for key, value in assumptions.items():
        print(f"  {key}: {value}")
    print()
    print(markdown(scenarios))
    print()
    print("frontier (named policies, then fixed keep-alives):")
    print(frontier_table(scenarios))
    print()

    figures: dict[str, Any] = {}
    target_report: dict[str, Any] = {}
    for s in scenarios:
        key = f"{s.name}_{s.metric}"
        figures[key] = s.as_dict()
        target_report[key] = targets_of(s, periodic=s.name == "periodic")
        for target, value in target_report[key].items():
            print(f"target {key} {target}: {'met' if value['met'] else 'NOT met'}")
    met = {
        target: all(t[target]["met"] for t in target_report.values() if target in t)
        for target in {name for t in target_report.values() for name in t}
    }
    files = {}
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        png, frontier_json = args.out / "scale_to_zero_frontier.png", args.out / "frontier.json"
        plot(scenarios, png)
        frontier_json.write_text(
            json.dumps(
                {
                    k: {"frontier": v["frontier"], "policies": v["policies"]}
                    for k, v in figures.items()
                },
                indent=1,
            )
        )
        files = {"png": str(png), "json": str(frontier_json)}
    line = {
        "benchmark": "scale_to_zero",
        "wall_s": round(time.perf_counter() - started, 2),
        "simulation_wall_s": round(sim_wall, 2),
        "cold_start": cold_start,
        "default_policy": DEFAULT_POLICY,
        "targets": target_report,
        "targets_met": dict(sorted(met.items())),
        "scenarios": figures,
        "files": files,
        "assumptions": assumptions,
        "anchors": ANCHORS,
    }
    print(json.dumps(line, separators=(",", ":")), flush=True)
    return 0


def _share(value: int, base: int) -> float | None:
    return round(value / base, 3) if base else None


if __name__ == "__main__":
    sys.exit(main())
