"""Measure the dev cluster: warm `up` time, peak RSS of the running control plane, `down` time.

    python benchmarks/dev_cluster.py [--runs 3] [--pods 30]

Each run brings up a fresh cluster (binaries from the cache; a cold cache builds them first and
that build is reported separately), creates GPU nodes and `--pods` one-GPU pods that the scheduler
places and KWOK runs, reads every component's peak resident set (VmHWM), and takes it down. The
target is a warm `up` under 30 s. Prints one JSON line last.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import yaml

from sparsam.api import constants as c
from sparsam.devcluster.bootstrap import bring_up
from sparsam.devcluster.cluster import DevCluster, kubectl_runner
from sparsam.devcluster.tools import ensure_binaries

WARM_UP_TARGET_S = 30.0


def _peak_rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return 0


def _pods(count: int) -> str:
    pods = [
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": f"load-{i}", "namespace": "default"},
            "spec": {
                "containers": [
                    {
                        "name": "w",
                        "image": "registry.invalid/w:1",
                        "resources": {"limits": {c.GPU_RESOURCE: "1"}},
                    }
                ],
                "tolerations": [{"operator": "Exists"}],
            },
        }
        for i in range(count)
    ]
    return yaml.safe_dump_all(pods)


def run_once(root: Path, index: int, pods: int) -> dict[str, float]:
    cluster = DevCluster(f"bench-{index}", root=root)
    started = time.monotonic()
    binaries = bring_up(cluster, gpu_nodes=True)
    up_s = time.monotonic() - started
    try:
        kubectl = kubectl_runner(binaries["kubectl"], cluster.kubeconfig)
        kubectl("apply", "-f", "-", input=_pods(pods))
        kubectl("wait", "--for=jsonpath={.status.phase}=Running", "--timeout=120s", "pods", "--all")
        state = cluster.state()
        assert state is not None
        peaks = {p.name: _peak_rss_kib(p.pid) for p in state.processes}
    finally:
        started = time.monotonic()
        cluster.down()
        down_s = time.monotonic() - started
    return {
        "up_s": up_s,
        "down_s": down_s,
        "peak_rss_mib": sum(peaks.values()) / 1024,
        **{f"peak_rss_mib_{name}": kib / 1024 for name, kib in peaks.items()},
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    # The default fleet has 9 GPUs; every pod asks for one and must run.
    parser.add_argument("--pods", type=int, default=9)
    args = parser.parse_args()
    started = time.monotonic()
    ensure_binaries()
    build_s = time.monotonic() - started
    with tempfile.TemporaryDirectory(prefix="sparsam-bench-") as tmp:
        runs = [run_once(Path(tmp), i, args.pods) for i in range(args.runs)]
    for run in runs:
        print(json.dumps({k: round(v, 2) for k, v in run.items()}), file=sys.stderr)
    median_up = statistics.median(r["up_s"] for r in runs)
    result = {
        "benchmark": "dev_cluster",
        "runs": args.runs,
        "pods": args.pods,
        "binaries_ready_s": round(build_s, 1),
        "warm_up_s_median": round(median_up, 2),
        "warm_up_target_s": WARM_UP_TARGET_S,
        "warm_up_vs_target": round(median_up / WARM_UP_TARGET_S, 3),
        "down_s_median": round(statistics.median(r["down_s"] for r in runs), 2),
        "peak_rss_mib_median": round(statistics.median(r["peak_rss_mib"] for r in runs), 1),
        "peak_rss_mib_by_component": {
            k.removeprefix("peak_rss_mib_"): round(statistics.median(r[k] for r in runs), 1)
            for k in runs[0]
            if k.startswith("peak_rss_mib_")
        },
    }
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
