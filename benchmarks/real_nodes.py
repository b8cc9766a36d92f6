"""Measure real nodes: `up --real-nodes N` wall time, pod create -> Running latency on a real node
(image already imported), and the resident memory a real node adds.

    python benchmarks/real_nodes.py [--nodes 2] [--pods 20] [--image pause]

One fresh dev cluster of its own (binaries and image archives from the cache): `up` is timed from
nothing (fresh) and again on the running cluster (idempotent); then `--pods` pods, one at a time,
each timed from the create call to the watch event that shows it Running; then each node's
kubelet and containerd VmRSS (idle, before the pods) and the shims' with the pods; then `down`.
Needs root and `make container-tools`. Prints one JSON line last.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from kubernetes import client, config, watch

from sparsam.devcluster import hostops, images
from sparsam.devcluster.bootstrap import bring_up
from sparsam.devcluster.cluster import DevCluster
from sparsam.devcluster.processes import Process


def _rss_kib(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def _node_rss(dev: DevCluster) -> dict[str, dict[str, int]]:
    state = dev.state()
    assert state is not None
    found: dict[str, dict[str, int]] = {}
    for node in state.real_nodes:
        mine: list[Process] = [p for p in state.processes if p.name in node.processes()]
        rss = {p.name.split("/")[0]: _rss_kib(p.pid) for p in mine}
        rss["shims"] = sum(_rss_kib(pid) for pid in hostops.shim_pids(node.paths.socket))
        found[node.name] = rss
    return found


def _pod(name: str, image: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name},
        "spec": {
            "terminationGracePeriodSeconds": 0,
            "containers": [{"name": "main", "image": image, "imagePullPolicy": "IfNotPresent"}],
        },
    }


def _time_pods(kubeconfig: Path, image: str, count: int) -> list[float]:
    api = client.CoreV1Api(config.new_client_from_config(str(kubeconfig)))
    running: dict[str, float] = {}
    stop = threading.Event()

    def watch_pods() -> None:
        stream = watch.Watch()
        for event in stream.stream(api.list_namespaced_pod, "default", timeout_seconds=300):
            pod = event["object"]
            if pod.status.phase == "Running" and pod.metadata.name not in running:
                running[pod.metadata.name] = time.monotonic()
            if stop.is_set():
                stream.stop()

    watcher = threading.Thread(target=watch_pods, daemon=True)
    watcher.start()
    time.sleep(1)  # the watch is open before the first create
    latencies = []
    for i in range(count):
        name = f"bench-{i}"
        started = time.monotonic()
        api.create_namespaced_pod("default", _pod(name, image))
        deadline = started + 60
        while name not in running and time.monotonic() < deadline:
            time.sleep(0.01)
        if name not in running:
            raise SystemExit(f"pod {name} was not Running within 60s")
        latencies.append(running[name] - started)
    stop.set()
    return latencies


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--nodes", type=int, default=2)
    parser.add_argument("--pods", type=int, default=20)
    parser.add_argument("--image", default="pause", help="one of our images (default pause)")
    args = parser.parse_args()
    archive = images.ensure_image(args.image)
    root = Path(tempfile.mkdtemp(prefix="sparsam-bench-real-"))
    dev = DevCluster("bench-real", root=root)
    extra = [] if args.image == "pause" else [args.image]
    try:
        started = time.monotonic()
        bring_up(dev, real_nodes=args.nodes, node_images=extra)
        fresh_s = time.monotonic() - started
        started = time.monotonic()
        bring_up(dev, real_nodes=args.nodes, node_images=extra)
        again_s = time.monotonic() - started
        time.sleep(5)  # let the kubelets settle after their first status reports
        idle = _node_rss(dev)
        latencies = _time_pods(dev.kubeconfig, archive.ref, args.pods)
        busy = _node_rss(dev)
    finally:
        started = time.monotonic()
        dev.down()
        down_s = time.monotonic() - started
    per_node = [rss["kubelet"] + rss["containerd"] for rss in idle.values()]
    result = {
        "nodes": args.nodes,
        "image": archive.ref,
        "up_fresh_s": round(fresh_s, 1),
        "up_again_s": round(again_s, 1),
        "down_s": round(down_s, 1),
        "pods": args.pods,
        "pod_running_p50_s": round(statistics.median(latencies), 2),
        "pod_running_p99_s": round(_percentile(latencies, 0.99), 2),
        "pod_running_max_s": round(max(latencies), 2),
        "node_rss_idle_mib": round(statistics.mean(per_node) / 1024, 1),
        "rss_idle_kib": idle,
        "rss_with_pods_kib": busy,
    }
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
