"""Operator scale: 500 TrainingJobs at 50 creates/s against 200 KWOK GPU nodes.

    python benchmarks/operator_scale.py [--jobs 500] [--nodes 200] [--rate 50] [--seed 0]
                                        [--kubeconfig PATH] [--keep]

Brings up a dev cluster of its own (`sparsam-bench`, torn down at the end unless --keep), or
uses the running cluster of --kubeconfig. Creates `--nodes` static KWOK GPU Nodes (8 GPUs each,
a GPU type of the benchmark's own, 70 % spot and 30 % on-demand, tainted and labelled as
devcluster/nodes.py makes them; no GPUNodePool: scaling nodes is not what this measures).

Baseline first, side by side in the same run: the apiserver's own floor, the time from a Pod
create call returning to that pod's watch ADDED event, for `--baseline-pods` plain pods created
at the same rate, before the operator runs. Then `sparsam run` starts as a subprocess with the
shipped defaults (the TrainingJob pass every 5 s, chart default `operator.trainingInterval`);
its CPU seconds (utime + stime, children included) and resident set (VmRSS, summed over its
process tree, every 0.5 s; plus the kernel's VmHWM) are sampled for the whole run, and its log
kept. `--jobs` TrainingJobs (workers min 2, max 2..4 seeded, one GPU each, spot Prefer) are
created at a paced `--rate` from a thread pool; a pod watch (label sparsam.dev/role=worker)
records when each worker pod is first seen. A job's latency is the last of its workers'
first-seen times minus the time its create call returned. The dev cluster's audit log
(`devcluster.audit`) also has when the apiserver stored the TrainingJob and each worker, to the
microsecond: from the one to the last of the others is the time to create the workers without
the watch that delivers them (`create_to_workers_stored_s`), and each worker's time from
stored to seen is how far the watch is behind (`worker_stored_to_seen_s`). It also has each
job's first status write: how long a job waits for its status while reports are paced
(`create_to_first_status_s`, `jobs_without_status`; `handlers.pacing`).

Second baseline, after the operator has stopped (`--direct`, on by default): the machine's
ceiling for this workload. The operator run's jobs, pods and Services are deleted first, so
that these workers are scheduled and started on free nodes as the operator's were (with the
nodes full they would stay Pending, and the scheduler's and nodes' share of the load would be
missing from the baseline). Then the same jobs at the same rate in namespaces of their own,
with no operator: each creating thread posts the TrainingJob and at once its rendezvous Service
and workers, with the controller's own manifests and calls (`kube.trainingjob`,
`kube.workers`), which is what an operator with no latency of its own would do. Its threads
fall behind the pace when the apiserver slows, so it is compared by the time from when each
job was due (start + i/rate) to its last worker seen (`due_to_workers_s` for both runs): the
wait for a free thread counts, as the wait in the operator's queue does. What
separates the operator from it is the operator's own cost (watching, Kopf, passes, status
writes); what separates it from the target is the control plane on two cores. Both runs
report the whole machine's busy cores (/proc/stat; the operator run also the cores stolen by
the hypervisor) and the apiserver's requests per job by verb and resource (the difference of
its `apiserver_request_total` across the run): how much room the control plane leaves an
operator, and what the operator adds to its load. They also count the watchers the apiserver
closed for falling behind (its log): where a worker counts as created when a watch delivers
it, a watch that falls behind adds its lag to the operator's; the audit log's times leave it out.

Targets: p99 create -> all workers < 5 s at 50 creates/s on 2 cores; RSS < 300 MB.
Prints a table, then one JSON line last. Asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, cast

from kubernetes.client import ApiClient, CoreV1Api, CustomObjectsApi
from kubernetes.client.exceptions import ApiException
from kubernetes.watch.watch import iter_resp_lines

from sparsam.api import constants as c
from sparsam.api.trainingjob import TrainingJob
from sparsam.decisions.training import desired_workers
from sparsam.devcluster import audit, nodes
from sparsam.devcluster.bootstrap import bring_up
from sparsam.devcluster.cluster import DevCluster
from sparsam.kube.client import api_client
from sparsam.kube.trainingjob import service_manifest, worker_manifest
from sparsam.kube.workers import WorkerActuator

P99_TARGET_S: Final = 5.0
RSS_TARGET_MIB: Final = 300.0
#: The chart's default (`operator.trainingInterval`) and `sparsam run`'s.
TRAINING_INTERVAL: Final = "5s"
GPU_TYPE: Final = "BENCH-GPU-8X"
SHAPE: Final = nodes.NodeShape("bench.8xgpu", GPU_TYPE, 8, "96", "768Gi")
SPOT_FRACTION: Final = 0.7
#: The nodes count as settled once none has changed for this long (`nodes_quiet`).
NODES_QUIET_S: Final = 5.0
#: Labels of what this benchmark creates, so it finds (and deletes) only its own.
BENCH_LABEL: Final = "bench.sparsam.dev/run"
FLOOR_LABEL: Final = "bench.sparsam.dev/floor"
#: Enough that the pacing holds while a create call takes up to 0.5 s on a loaded machine, and
#: that the direct baseline, whose threads each make a job's five calls in turn, keeps up about
#: 40 jobs/s (24 threads kept up 30).
CREATE_THREADS: Final = 64
SAMPLE_EVERY_S: Final = 0.5
#: A watch request lasts this long, then resumes from its last resourceVersion.
WATCH_SPAN_S: Final = 10
CLK_TCK: Final = os.sysconf("SC_CLK_TCK")
Key = tuple[str, str]  # namespace, name


def loadavg() -> str:
    return Path("/proc/loadavg").read_text().strip()


_T0: Final = time.monotonic()


def _cpu_fields() -> list[int]:
    return [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]


def machine_busy_s() -> float:
    """CPU seconds the whole machine spent not idle (all cores), from /proc/stat."""
    fields = _cpu_fields()
    idle = fields[3] + fields[4]  # idle + iowait
    return (sum(fields[:8]) - idle) / CLK_TCK


def machine_steal_s() -> float:
    """CPU seconds the hypervisor gave to other machines while ours wanted them (steal): the
    likeliest reason the same commit runs slower an hour later."""
    return _cpu_fields()[7] / CLK_TCK


_LABEL: Final = re.compile(r'(\w+)="([^"]*)"')


def apiserver_requests(api: ApiClient) -> Counter[str]:
    """The apiserver's `apiserver_request_total` so far, by "VERB resource[/subresource]"
    (requests it answered, whatever the code; a WATCH counts once, when it opens)."""
    method, url, headers, _, _ = api.param_serialize(
        "GET", "/metrics", header_params={"Accept": "text/plain"}, auth_settings=["BearerToken"]
    )
    text = api.rest_client.request(method, url, headers=headers).read().decode()  # type: ignore[no-untyped-call]
    counts: Counter[str] = Counter()
    for line in text.splitlines():
        if not line.startswith("apiserver_request_total{"):
            continue
        labels_text, _, value = line.rpartition(" ")
        labels = dict(_LABEL.findall(labels_text))
        if not labels.get("resource"):
            continue
        sub = labels.get("subresource")
        counts[f"{labels['verb']} {labels['resource']}{'/' + sub if sub else ''}"] += int(
            float(value)
        )
    return counts


def per_job(before: Counter[str], after: Counter[str], jobs: int) -> dict[str, float]:
    """Requests per job between two `apiserver_requests`, those at 0.05 a job or more."""
    delta = after - before
    rows = {key: round(n / jobs, 2) for key, n in delta.most_common() if n >= 0.05 * jobs}
    return {"total": round(sum(delta.values()) / jobs, 2), **rows}


def say(text: str) -> None:
    print(f"[{time.monotonic() - _T0:6.1f}s] {text}", file=sys.stderr, flush=True)


# --- the operator's process tree: CPU seconds and resident set -----------------------------


def _stat(pid: int) -> tuple[int, float, float] | None:
    """(ppid, own CPU seconds, reaped children's CPU seconds) of `pid`, or None if gone."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = raw[raw.rindex(")") + 2 :].split()
    # After "pid (comm) ": state ppid ... utime(11) stime(12) cutime(13) cstime(14).
    own = (int(fields[11]) + int(fields[12])) / CLK_TCK
    reaped = (int(fields[13]) + int(fields[14])) / CLK_TCK
    return int(fields[1]), own, reaped


def processes_cpu_s(cluster: Cluster) -> dict[str, float]:
    """Own CPU seconds so far of each of the dev cluster's processes (none for an existing
    cluster) and of this benchmark: where the machine's cores go besides the operator."""
    pids = {"benchmark": os.getpid()}
    state = cluster.dev.state() if cluster.dev is not None else None
    if state is not None:
        pids |= {p.name: p.pid for p in state.processes}
    found = {name: _stat(pid) for name, pid in pids.items()}
    return {name: stat[1] for name, stat in found.items() if stat is not None}


def watchers_closed(cluster: Cluster) -> int | None:
    """How many watchers the apiserver has closed so far because they fell behind (its log's
    "Forcing ... watcher close due to unresponsiveness"; None for an existing cluster). A
    watcher's buffer fills when the apiserver has no CPU to send its events, or its client
    none to read them; events of that resource then wait for everyone, and the closed watcher
    starts again. Pod events seen late are create -> workers latency this benchmark counts."""
    if cluster.dev is None:
        return None
    try:
        with (cluster.dev.logs / "kube-apiserver.log").open(errors="replace") as log:
            return sum(1 for line in log if "due to unresponsiveness" in line)
    except OSError:
        return None


@dataclass(frozen=True, slots=True)
class Stored:
    """When the apiserver stored each TrainingJob and each pod (their create calls' end on its
    clock, seconds since the epoch), and each job's first status, from its audit log."""

    jobs: dict[Key, float]
    pods: dict[Key, float]
    statuses: dict[Key, float]

    def first_status(self, names: Sequence[Key]) -> tuple[list[float], int]:
        """From each job stored to its first status written; and how many jobs had none."""
        after = [
            self.statuses[k] - self.jobs[k] for k in names if k in self.jobs and k in self.statuses
        ]
        return after, len(names) - len(after)

    def workers_latency(self, names: Sequence[Key], max_workers: Sequence[int]) -> list[float]:
        """Each job's time from its TrainingJob stored to its last worker stored: the workers'
        creation, without the watch that delivers them to a client."""
        latency = []
        for i, keys in worker_keys(names, max_workers).items():
            times = [self.pods.get(k) for k in keys]
            if names[i] in self.jobs and all(t is not None for t in times):
                latency.append(max(t for t in times if t is not None) - self.jobs[names[i]])
        return latency


def stored_at(cluster: Cluster) -> Stored | None:
    """The dev cluster's audit log; None on an existing cluster, whose log this cannot read."""
    if cluster.dev is None:
        return None
    writes = list(audit.read(cluster.dev.audit_log))
    return Stored(
        audit.created(writes, c.TRAINING_JOB.plural),
        audit.created(writes, "pods"),
        audit.first_status(writes, c.TRAINING_JOB.plural),
    )


def job_names(namespaces: Sequence[str], count: int) -> list[Key]:
    return [(namespaces[i % len(namespaces)], f"tj-{i:04d}") for i in range(count)]


def worker_keys(names: Sequence[Key], max_workers: Sequence[int]) -> dict[int, list[Key]]:
    return {
        i: [(ns, f"{name}-worker-{w}") for w in range(max_workers[i])]
        for i, (ns, name) in enumerate(names)
    }


def closed_between(before: int | None, after: int | None) -> int | None:
    return None if before is None or after is None else after - before


def cores_between(
    before: dict[str, float], after: dict[str, float], seconds: float
) -> dict[str, float]:
    return {
        name: round((after[name] - before[name]) / seconds, 3) for name in before if name in after
    }


def _status_kib(pid: int, key: str) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def _tree(root: int) -> list[int]:
    """`root` and every live descendant."""
    parents: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            found = _stat(int(entry.name))
            if found is not None:
                parents.setdefault(found[0], []).append(int(entry.name))
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo += parents.get(pid, [])
    return out


@dataclass
class Sampler:
    """Samples a process tree every 0.5 s in a thread: CPU seconds now, RSS now and at peak."""

    pid: int
    cpu_s: float = 0.0
    rss_mib: float = 0.0
    peak_rss_mib: float = 0.0
    #: The root process's VmHWM (the kernel's own peak), read while it lives.
    hwm_mib: float = 0.0
    samples: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def sample(self) -> None:
        cpu, rss = 0.0, 0
        for pid in _tree(self.pid):
            found = _stat(pid)
            if found is None:
                continue
            cpu += found[1] + (found[2] if pid == self.pid else 0.0)
            rss += _status_kib(pid, "VmRSS:")
        hwm = _status_kib(self.pid, "VmHWM:")
        if cpu == 0.0 and rss == 0:
            return  # gone: keep the last reading
        self.cpu_s, self.rss_mib = cpu, rss / 1024
        self.peak_rss_mib = max(self.peak_rss_mib, self.rss_mib)
        self.hwm_mib = max(self.hwm_mib, hwm / 1024)
        self.samples += 1

    def start(self) -> None:
        def loop() -> None:
            while not self._stop.wait(SAMPLE_EVERY_S):
                self.sample()

        self.sample()
        self._thread = threading.Thread(target=loop, name="sampler", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self.sample()
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)


# --- pods as the watch sees them ----------------------------------------------------------


class PodWatch:
    """Pods matching `selector` cluster-wide: the monotonic time each is first seen."""

    def __init__(self, api: ApiClient, selector: str) -> None:
        self._core = CoreV1Api(api)
        self.selector = selector
        self.seen: dict[Key, float] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self.errors: list[str] = []
        self._version = self._now_version()
        self._thread = threading.Thread(target=self._run, name="pod-watch", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                response = self._core.list_pod_for_all_namespaces(
                    label_selector=self.selector,
                    watch=True,
                    allow_watch_bookmarks=True,
                    resource_version=self._version,
                    timeout_seconds=WATCH_SPAN_S,
                    _preload_content=False,
                )
                for line in iter_resp_lines(response):  # type: ignore[no-untyped-call]
                    now = time.monotonic()
                    if self._stop.is_set():
                        return
                    event = json.loads(line)
                    meta = event["object"].get("metadata", {})
                    if event["type"] == "ERROR":
                        # 410 Gone: the version is too old; start again from now.
                        self.errors.append(str(event["object"].get("message")))
                        self._version = self._now_version()
                        break
                    self._version = meta.get("resourceVersion", self._version)
                    if event["type"] == "BOOKMARK":
                        continue
                    key = (str(meta.get("namespace")), str(meta.get("name")))
                    with self._lock:
                        self.seen.setdefault(key, now)
            except Exception as exc:  # reconnect; the report counts these
                if self._stop.is_set():
                    return
                self.errors.append(f"{type(exc).__name__}: {exc}")
                time.sleep(0.2)

    def _now_version(self) -> str:
        listed = self._core.list_pod_for_all_namespaces(label_selector=self.selector, limit=1)
        return str(listed.metadata.resource_version) if listed.metadata else ""

    def first_seen(self, key: Key) -> float | None:
        with self._lock:
            return self.seen.get(key)

    def stop(self) -> None:
        """Stop recording. The thread ends when its stream does (within WATCH_SPAN_S):
        closing a stream another thread reads from can block for a long time."""
        self._stop.set()


# --- paced creation ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Created:
    #: When it was due by the pace (start + i/rate); `sent` is later when every thread is busy.
    due: float
    sent: float
    returned: float
    error: str | None = None


def paced(
    count: int, rate: float, create: Callable[[int], object], threads: int = CREATE_THREADS
) -> list[Created]:
    """Call `create(i)` for i < count, the i-th submitted at start + i/rate, from a pool."""
    results: list[Created | None] = [None] * count

    def one(i: int) -> None:
        sent = time.monotonic()
        error = None
        try:
            create(i)
        except ApiException as exc:
            error = f"{exc.status} {exc.reason}"
        results[i] = Created(start + i / rate, sent, time.monotonic(), error)

    start = time.monotonic()
    with ThreadPoolExecutor(max_workers=threads, thread_name_prefix="create") as pool:
        for i in range(count):
            delay = start + i / rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            pool.submit(one, i)
    return [r for r in results if r is not None]


def percentiles(values: Sequence[float]) -> dict[str, float | None]:
    """Nearest-rank p50, p95, p99 and max, in seconds (None when there are no values)."""
    ordered = sorted(values)

    def rank(p: float) -> float | None:
        if not ordered:
            return None
        return round(ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)], 3)

    return {
        "p50": rank(50),
        "p95": rank(95),
        "p99": rank(99),
        "max": round(ordered[-1], 3) if ordered else None,
    }


def wait_until(what: str, check: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            say(f"  timed out after {timeout:.0f}s waiting for {what}")
            return False
        time.sleep(0.2)
    return True


# --- what the benchmark creates ------------------------------------------------------------


def node_manifests(count: int, run: str) -> list[dict[str, Any]]:
    spot = round(count * SPOT_FRACTION)
    out = []
    for i in range(count):
        capacity = c.CAPACITY_SPOT if i < spot else c.CAPACITY_ON_DEMAND
        kind = "spot" if i < spot else "ondemand"
        out.append(nodes.gpu_node(f"bench-gpu-{kind}-{i:03d}", SHAPE, capacity, {BENCH_LABEL: run}))
    return out


def trainingjob(name: str, namespace: str, max_workers: int, run: str) -> dict[str, Any]:
    return {
        "apiVersion": c.API_VERSION,
        "kind": c.TRAINING_JOB.kind,
        "metadata": {"name": name, "namespace": namespace, "labels": {BENCH_LABEL: run}},
        "spec": {
            "image": "registry.invalid/bench-trainer:1",
            "workers": {"min": 2, "max": max_workers},
            "resources": {"gpus": 1, "gpuType": GPU_TYPE, "cpu": "10m", "memory": "16Mi"},
            "capacity": {"spot": "Prefer"},
        },
    }


def floor_pod(name: str, namespace: str, run: str) -> dict[str, Any]:
    """A plain pod shaped like a worker (one GPU of our type), for the apiserver's floor."""
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": {BENCH_LABEL: run, FLOOR_LABEL: "true"},
        },
        "spec": {
            "containers": [
                {
                    "name": "w",
                    "image": "registry.invalid/bench-trainer:1",
                    "resources": {
                        "requests": {"cpu": "10m", "memory": "16Mi"},
                        "limits": {c.GPU_RESOURCE: "1"},
                    },
                }
            ],
            "nodeSelector": {c.LABEL_GPU_PRODUCT: GPU_TYPE},
            "tolerations": [
                {"key": c.TAINT_GPU, "operator": "Exists", "effect": "NoSchedule"},
                {"key": c.TAINT_SPOT, "operator": "Exists", "effect": "NoSchedule"},
            ],
        },
    }


def create_nodes(core: CoreV1Api, manifests: list[dict[str, Any]]) -> None:
    def one(node: dict[str, Any]) -> None:
        try:
            core.create_node(cast(Any, node))
        except ApiException as exc:
            if exc.status != 409:
                raise

    with ThreadPoolExecutor(max_workers=CREATE_THREADS) as pool:
        list(pool.map(one, manifests))


def ready_nodes(core: CoreV1Api, run: str) -> int:
    listed = core.list_node(label_selector=f"{BENCH_LABEL}={run}")
    ready = 0
    for node in listed.items:
        conditions = (node.status.conditions if node.status else None) or []
        if any(cond.type == "Ready" and cond.status == "True" for cond in conditions):
            ready += 1
    return ready


def nodes_quiet(core: CoreV1Api, run: str, quiet_s: float) -> Callable[[], bool]:
    """A check that holds once no node of `run` has changed for `quiet_s` seconds.

    Ready is not settled: for about 45 s after 200 nodes join, kube-controller-manager labels,
    annotates and untaints each of them (a GET and a PATCH a node, at its client's 20 QPS). A
    burst started before then shares the apiserver with those writes, and its scheduler finds
    nodes still tainted not-ready, while the baseline, which runs later, finds them settled."""
    versions: dict[str, str] | None = None
    since = time.monotonic()

    def check() -> bool:
        nonlocal versions, since
        listed: Any = core.list_node(label_selector=f"{BENCH_LABEL}={run}", _preload_content=False)
        items = json.loads(listed.data)["items"]
        now_versions = {n["metadata"]["name"]: n["metadata"]["resourceVersion"] for n in items}
        now = time.monotonic()
        if now_versions != versions:
            versions, since = now_versions, now
        return now - since >= quiet_s

    return check


def make_namespaces(core: CoreV1Api, names: Sequence[str], run: str) -> None:
    for name in names:
        core.create_namespace(cast(Any, {"metadata": {"name": name, "labels": {BENCH_LABEL: run}}}))
    for name in names:

        def account(ns: str = name) -> bool:
            try:
                core.read_namespaced_service_account("default", ns)
            except ApiException:
                return False
            return True

        wait_until(f"the default service account of {name}", account, 60)


# --- the operator ---------------------------------------------------------------------------


@dataclass
class OperatorProcess:
    kubeconfig: Path
    log: Path
    process: subprocess.Popen[bytes] | None = None

    def start(self) -> int:
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "sparsam.cli",
                    "run",
                    f"--kubeconfig={self.kubeconfig}",
                    f"--training-interval={TRAINING_INTERVAL}",
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        return self.process.pid

    def stop(self) -> int | None:
        if self.process is None:
            return None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=30)
        return self.process.returncode

    def problems(self) -> dict[str, Any]:
        """ERROR lines and Tracebacks while it ran and after SIGTERM (while stopping)."""
        lines = self.log.read_text(errors="replace").splitlines()
        stop = next((i for i, line in enumerate(lines) if "SIGTERM" in line), len(lines))
        out: dict[str, Any] = {"examples": []}
        for when, part in (("running", lines[:stop]), ("stopping", lines[stop:])):
            errors = [line for line in part if " ERROR " in line or " CRITICAL " in line]
            tracebacks = [line for line in part if line.startswith("Traceback")]
            out[when] = {"errors": len(errors), "tracebacks": len(tracebacks)}
            out["examples"] += [f"({when}) {line}" for line in errors[:2]]
        return out


# --- the run --------------------------------------------------------------------------------


@dataclass
class Cluster:
    kubeconfig: Path
    dev: DevCluster | None  # None: an existing cluster (--kubeconfig)


@dataclass(frozen=True, slots=True)
class Floor:
    after_return: list[float]  # create call returned -> watch ADDED
    after_send: list[float]  # create call sent -> watch ADDED
    call: list[float]  # the create call itself
    errors: int


def measure_floor(api: ApiClient, namespace: str, count: int, rate: float, run: str) -> Floor:
    """Plain pods at `rate`, no operator: how soon a watch sees a created pod."""
    core = CoreV1Api(api_client_like(api))
    watch = PodWatch(api_client_like(api), f"{FLOOR_LABEL}=true,{BENCH_LABEL}={run}")
    names = [f"floor-{i:03d}" for i in range(count)]
    created = paced(
        count,
        rate,
        lambda i: core.create_namespaced_pod(
            namespace, cast(Any, floor_pod(names[i], namespace, run))
        ),
    )
    keys = [(namespace, n) for n in names]
    wait_until("the floor pods", lambda: all(watch.first_seen(k) for k in keys), 60)
    watch.stop()
    after_return, after_send = [], []
    for key, made in zip(keys, created, strict=True):
        seen = watch.first_seen(key)
        if seen is not None and made.error is None:
            after_return.append(seen - made.returned)
            after_send.append(seen - made.sent)
    core.delete_collection_namespaced_pod(
        namespace, label_selector=f"{FLOOR_LABEL}=true", grace_period_seconds=0
    )
    wait_until(
        "the floor pods to go",
        lambda: not core.list_pod_for_all_namespaces(label_selector=f"{FLOOR_LABEL}=true").items,
        60,
    )
    return Floor(
        after_return,
        after_send,
        [m.returned - m.sent for m in created],
        sum(1 for m in created if m.error),
    )


@dataclass(frozen=True, slots=True)
class Direct:
    latency: list[float]  # job create returned -> all its workers seen
    #: Due (by the pace) -> all its workers seen: with the wait for a free creating thread,
    #: which `latency` leaves out (a thread makes all of a job's calls, one after another).
    from_due: list[float]
    #: Jobs per second the creating threads kept up (below `rate` when they fell behind).
    achieved_rate: float
    workers_per_s: float | None
    errors: int
    #: The whole machine's busy cores from the first create to the last worker seen: what
    #: the control plane alone takes for this load, the room an operator has beside it.
    machine_busy_cores: float
    #: The same, by process: the dev cluster's and this benchmark's.
    process_cores: dict[str, float]
    apiserver_requests_per_job: dict[str, float]
    watchers_closed: int | None


def measure_direct(
    api: ApiClient,
    cluster: Cluster,
    namespaces: Sequence[str],
    max_workers: Sequence[int],
    rate: float,
    run: str,
) -> Direct:
    """The jobs with no operator: each thread creates the TrainingJob, then its Service and
    workers exactly as a pass would, with no wait in between."""
    custom = CustomObjectsApi(api_client_like(api))
    actuator = WorkerActuator(api_client_like(api))
    watch = PodWatch(api_client_like(api), f"{c.LABEL_ROLE}={c.ROLE_WORKER}")
    names = job_names(namespaces, len(max_workers))
    returned: dict[int, float] = {}

    def one(i: int) -> None:
        namespace, name = names[i]
        body = custom.create_namespaced_custom_object(
            c.GROUP,
            c.VERSION,
            namespace,
            c.TRAINING_JOB.plural,
            trainingjob(name, namespace, max_workers[i], run),
        )
        returned[i] = time.monotonic()
        job = TrainingJob.from_body(cast(dict[str, Any], body))
        actuator.apply_service(service_manifest(job))
        for index in range(desired_workers(job)):
            actuator.create_pod(worker_manifest(job, index))

    started, busy_before = time.monotonic(), machine_busy_s()
    processes_before = processes_cpu_s(cluster)
    requests_before = apiserver_requests(api)
    closed_before = watchers_closed(cluster)
    created = paced(len(max_workers), rate, one)
    keys = worker_keys(names, max_workers)
    wait_until(
        "the direct jobs' workers",
        lambda: all(watch.first_seen(k) for ks in keys.values() for k in ks),
        120,
    )
    elapsed = time.monotonic() - started
    busy_cores = (machine_busy_s() - busy_before) / elapsed
    process_cores = cores_between(processes_before, processes_cpu_s(cluster), elapsed)
    requests = per_job(requests_before, apiserver_requests(api), len(max_workers))
    watch.stop()
    latency, from_due = [], []
    for i, ks in keys.items():
        seen = [watch.first_seen(k) for k in ks]
        if i in returned and all(t is not None for t in seen):
            last = max(t for t in seen if t is not None)
            latency.append(last - returned[i])
            from_due.append(last - created[i].due)
    times = sorted(t for ks in keys.values() for k in ks if (t := watch.first_seen(k)))
    span = times[-1] - times[0] if len(times) > 1 else 0.0
    create_span = max(m.returned for m in created) - min(m.sent for m in created)
    return Direct(
        latency,
        from_due,
        round(len(created) / create_span, 2),
        round((len(times) - 1) / span, 1) if span > 0 else None,
        sum(1 for m in created if m.error),
        round(busy_cores, 3),
        process_cores,
        requests,
        closed_between(closed_before, watchers_closed(cluster)),
    )


def free_nodes(api: ApiClient, namespaces: Sequence[str]) -> None:
    """Delete the operator run's TrainingJobs and pods at once (grace 0). Its workers hold
    nearly every GPU; the direct baseline's must be scheduled and started as they were, not
    left Pending, or it would leave out the scheduler's and the nodes' share of the load."""
    core, custom = CoreV1Api(api), CustomObjectsApi(api)
    for namespace in namespaces:
        custom.delete_collection_namespaced_custom_object(
            c.GROUP, c.VERSION, namespace, c.TRAINING_JOB.plural
        )
        core.delete_collection_namespaced_pod(namespace, grace_period_seconds=0)
        # Not left to the garbage collector, which would be deleting them during the baseline.
        core.delete_collection_namespaced_service(namespace)

    def gone() -> bool:
        return not any(
            core.list_namespaced_pod(ns, limit=1).items
            or core.list_namespaced_service(ns, limit=1).items
            for ns in namespaces
        )

    wait_until("the operator run's pods and Services gone", gone, 120)


def api_client_like(api: ApiClient) -> ApiClient:
    """A second client on the same configuration (own connection pool): watches apart."""
    return ApiClient(api.configuration)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=500)
    parser.add_argument("--nodes", type=int, default=200)
    parser.add_argument("--rate", type=float, default=50.0, help="creates per second")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--kubeconfig", type=Path, default=None, help="use this running cluster")
    parser.add_argument("--name", default="sparsam-bench", help="own dev cluster's name")
    parser.add_argument("--keep", action="store_true", help="leave the cluster and objects")
    parser.add_argument("--namespaces", type=int, default=5)
    parser.add_argument("--baseline-pods", type=int, default=100)
    parser.add_argument("--timeout", type=float, default=180, help="seconds after the last create")
    parser.add_argument(
        "--settle",
        type=float,
        default=40,
        help="seconds the operator keeps running after the last worker; its steady CPU is that "
        "of the second half",
    )
    parser.add_argument("--log", type=Path, default=None, help="operator log (default: temp)")
    parser.add_argument("--dump", type=Path, default=None, help="per-job JSON lines here")
    parser.add_argument("--bin-dir", type=Path, default=None)
    parser.add_argument(
        "--no-direct",
        dest="direct",
        action="store_false",
        help="skip the second baseline (the same jobs, no operator)",
    )
    args = parser.parse_args()
    started = time.monotonic()
    # The watch's monotonic times, on the audit log's clock (the same machine's).
    wall_offset = time.time() - started
    load_start = loadavg()
    run = uuid.uuid4().hex[:6]
    rng = random.Random(args.seed)  # noqa: S311 - a reproducible workload, not a secret
    max_workers = [rng.randint(2, 4) for _ in range(args.jobs)]
    namespaces = [f"bench-{run}-{k}" for k in range(args.namespaces)]
    direct_namespaces = [f"bench-{run}-direct-{k}" for k in range(args.namespaces)]
    work = Path(tempfile.mkdtemp(prefix="sparsam-operator-scale-"))
    log = args.log or work / "operator.log"
    say(f"operator_scale: run {run}, load {load_start}, {os.cpu_count()} CPUs, log {log}")

    if args.kubeconfig is not None:
        cluster = Cluster(args.kubeconfig, None)
        cluster_up_s = 0.0
    else:
        dev = DevCluster(args.name)
        say(f"bringing up dev cluster {args.name!r} ({dev.dir}) ...")
        before = time.monotonic()
        bring_up(dev, bin_dir=args.bin_dir, log=lambda line: say(f"  {line}"))
        cluster = Cluster(dev.kubeconfig, dev)
        cluster_up_s = time.monotonic() - before

    operator = OperatorProcess(cluster.kubeconfig, log)
    sampler: Sampler | None = None
    api = api_client(cluster.kubeconfig)
    core = CoreV1Api(api)
    # The creating threads' own client, with a connection for each of them.
    api.configuration.connection_pool_maxsize = CREATE_THREADS + 2
    custom = CustomObjectsApi(ApiClient(api.configuration))
    result: dict[str, Any] = {}
    try:
        before = time.monotonic()
        create_nodes(core, node_manifests(args.nodes, run))
        wait_until(f"{args.nodes} nodes Ready", lambda: ready_nodes(core, run) >= args.nodes, 120)
        nodes_s = time.monotonic() - before
        say(f"{args.nodes} GPU nodes Ready in {nodes_s:.1f}s")
        wait_until("the nodes to settle", nodes_quiet(core, run, NODES_QUIET_S), 180)
        settled_s = time.monotonic() - before
        say(f"  and settled (unchanged for {NODES_QUIET_S:g}s) {settled_s:.1f}s after creation")
        make_namespaces(core, namespaces + (direct_namespaces if args.direct else []), run)

        say(f"baseline: {args.baseline_pods} plain pods at {args.rate:g}/s, no operator ...")
        floor = measure_floor(api, namespaces[0], args.baseline_pods, args.rate, run)

        say(f"starting sparsam run (--training-interval={TRAINING_INTERVAL}) ...")
        pid = operator.start()
        sampler = Sampler(pid)
        sampler.start()
        watch = PodWatch(api_client_like(api), f"{c.LABEL_ROLE}={c.ROLE_WORKER}")
        # A warm-up job proves the operator is up (its watches listed, its timers running).
        warm_ns = namespaces[0]
        warm_created = time.monotonic()
        custom.create_namespaced_custom_object(
            c.GROUP,
            c.VERSION,
            warm_ns,
            c.TRAINING_JOB.plural,
            trainingjob("warmup", warm_ns, 2, run),
        )
        warm_keys = [(warm_ns, f"warmup-worker-{i}") for i in range(2)]
        if not wait_until(
            "the warm-up job's workers", lambda: all(watch.first_seen(k) for k in warm_keys), 120
        ):
            raise RuntimeError(f"the operator made no workers; see {log}")
        warmup_s = max(watch.first_seen(k) or 0.0 for k in warm_keys) - warm_created
        time.sleep(2)
        cpu_before_jobs = sampler.cpu_s
        busy_before_jobs, steal_before_jobs = machine_busy_s(), machine_steal_s()
        requests_before_jobs = apiserver_requests(api)
        closed_before_jobs = watchers_closed(cluster)
        processes_before_jobs = processes_cpu_s(cluster)
        rss_before_jobs = sampler.rss_mib

        say(f"creating {args.jobs} TrainingJobs at {args.rate:g}/s ...")
        names = job_names(namespaces, args.jobs)
        jobs_started = time.monotonic()
        created = paced(
            args.jobs,
            args.rate,
            lambda i: custom.create_namespaced_custom_object(
                c.GROUP,
                c.VERSION,
                names[i][0],
                c.TRAINING_JOB.plural,
                trainingjob(names[i][1], names[i][0], max_workers[i], run),
            ),
        )
        create_span = max(m.returned for m in created) - min(m.sent for m in created)
        create_errors = [m.error for m in created if m.error]
        say(
            f"  created in {create_span:.1f}s ({args.jobs / create_span:.1f}/s), "
            f"{len(create_errors)} errors; waiting for workers (up to {args.timeout:.0f}s) ..."
        )
        workers = worker_keys(names, max_workers)

        def done_count() -> int:
            return sum(1 for keys in workers.values() if all(watch.first_seen(k) for k in keys))

        def progress() -> bool:
            return done_count() >= int(args.jobs) - len(create_errors)

        wait_until("every job's workers", progress, args.timeout)
        all_done = time.monotonic()
        latency, first_latency, from_due = [], [], []
        done_by_index: dict[int, float] = {}
        for i, keys in workers.items():
            seen = [watch.first_seen(k) for k in keys]
            if created[i].error is None and all(s is not None for s in seen):
                times = [s for s in seen if s is not None]
                latency.append(max(times) - created[i].returned)
                first_latency.append(min(times) - created[i].returned)
                from_due.append(max(times) - created[i].due)
                done_by_index[i] = latency[-1]
        cpu_jobs = sampler.cpu_s - cpu_before_jobs
        jobs_wall = all_done - jobs_started
        busy_jobs = machine_busy_s() - busy_before_jobs
        steal_jobs = machine_steal_s() - steal_before_jobs
        requests_jobs = per_job(requests_before_jobs, apiserver_requests(api), args.jobs)
        closed_jobs = closed_between(closed_before_jobs, watchers_closed(cluster))
        processes_jobs = cores_between(processes_before_jobs, processes_cpu_s(cluster), jobs_wall)
        by_decile = [
            percentiles([v for i, v in done_by_index.items() if i * 10 // args.jobs == d])["p50"]
            for d in range(10)
        ]
        seen_times = sorted(
            t for keys in workers.values() for k in keys if (t := watch.first_seen(k))
        )
        if args.dump is not None:
            with args.dump.open("w") as out:
                for i, (ns, name) in enumerate(names):
                    first = [watch.first_seen(k) for k in workers[i]]
                    row = {
                        "i": i,
                        "job": f"{ns}/{name}",
                        "workers": max_workers[i],
                        "sent": round(created[i].sent - jobs_started, 4),
                        "returned": round(created[i].returned - jobs_started, 4),
                        "seen": [None if t is None else round(t - jobs_started, 4) for t in first],
                    }
                    out.write(json.dumps(row) + "\n")

        say(f"  {len(latency)} jobs done; letting the operator run {args.settle:.0f}s more ...")
        # Steady: the second half only, once the workers' start-up (scheduling, Running, the
        # status writes it causes) is behind.
        time.sleep(args.settle / 2)
        sampler.sample()
        settle_cpu = sampler.cpu_s
        time.sleep(args.settle / 2)
        sampler.sample()
        steady_cores = (sampler.cpu_s - settle_cpu) / (args.settle / 2) if args.settle else None
        watch.stop()
        sampler.stop()
        operator.stop()
        problems = operator.problems()
        examples = problems.pop("examples")
        direct: Direct | None = None
        if args.direct:
            say(
                f"baseline: the same {args.jobs} jobs, no operator "
                "(Service and workers at once) ..."
            )
            free_nodes(api, namespaces)
            direct = measure_direct(api, cluster, direct_namespaces, max_workers, args.rate, run)

        stored = stored_at(cluster)
        stored_latency_op = None if stored is None else stored.workers_latency(names, max_workers)
        stored_latency_direct = (
            None
            if direct is None or stored is None
            else stored.workers_latency(job_names(direct_namespaces, args.jobs), max_workers)
        )
        # Each worker's wait in the watch: stored by the apiserver -> first seen here.
        watch_lag = (
            None
            if stored is None
            else [
                at + wall_offset - stored.pods[k]
                for keys in workers.values()
                for k in keys
                if k in stored.pods and (at := watch.first_seen(k)) is not None
            ]
        )
        first_status = None if stored is None else stored.first_status(names)
        total_workers = sum(max_workers)
        lat = percentiles(latency)
        met = {
            "p99": lat["p99"] is not None
            and lat["p99"] < P99_TARGET_S
            and len(latency) == args.jobs,
            "rss": sampler.peak_rss_mib < RSS_TARGET_MIB,
            "all_jobs": len(latency) == args.jobs,
            "p99_stored": stored_latency_op is not None
            and len(stored_latency_op) == args.jobs
            and (percentiles(stored_latency_op)["p99"] or 0.0) < P99_TARGET_S,
        }
        result = {
            "benchmark": "operator_scale",
            "jobs": args.jobs,
            "jobs_done": len(latency),
            "jobs_missing": args.jobs - len(latency),
            "create_errors": len(create_errors),
            "workers": total_workers,
            "nodes": args.nodes,
            "gpus_per_node": SHAPE.gpus,
            "rate_per_s": args.rate,
            "achieved_rate_per_s": round(args.jobs / create_span, 2),
            "training_interval": TRAINING_INTERVAL,
            "create_to_workers_s": lat,
            "create_to_first_worker_s": percentiles(first_latency),
            # The apiserver's audit log: TrainingJob stored -> its last worker stored.
            "create_to_workers_stored_s": None
            if stored_latency_op is None
            else percentiles(stored_latency_op),
            "worker_stored_to_seen_s": None if watch_lag is None else percentiles(watch_lag),
            # What pacing status reports costs (handlers.pacing): a job's wait for its first.
            "create_to_first_status_s": None
            if first_status is None
            else percentiles(first_status[0]),
            "jobs_without_status": None if first_status is None else first_status[1],
            # From when the job was due by the pace: what the direct baseline is compared by.
            "due_to_workers_s": percentiles(from_due),
            "baseline_pod_create_to_watch_s": {
                "pods": args.baseline_pods,
                "errors": floor.errors,
                **percentiles(floor.after_return),
                "from_send": percentiles(floor.after_send),
            },
            "baseline_pod_create_call_s": percentiles(floor.call),
            "baseline_direct_create_to_workers_s": None
            if direct is None
            else {
                "jobs": len(direct.latency),
                "errors": direct.errors,
                **percentiles(direct.latency),
            },
            "baseline_direct_create_to_workers_stored_s": None
            if stored_latency_direct is None
            else percentiles(stored_latency_direct),
            "baseline_direct_due_to_workers_s": None
            if direct is None
            else percentiles(direct.from_due),
            "baseline_direct_achieved_rate_per_s": None if direct is None else direct.achieved_rate,
            "baseline_direct_workers_seen_per_s": None if direct is None else direct.workers_per_s,
            "baseline_direct_machine_busy_cores": None
            if direct is None
            else direct.machine_busy_cores,
            "p99_ratio_operator_to_direct": None
            if direct is None or not direct.from_due
            else round(
                (percentiles(from_due)["p99"] or 0.0)
                / max(1e-3, percentiles(direct.from_due)["p99"] or 0.0),
                2,
            ),
            "job_create_call_s": percentiles([m.returned - m.sent for m in created]),
            "create_to_workers_p50_by_create_decile_s": by_decile,
            "workers_seen_per_s": round((len(seen_times) - 1) / (seen_times[-1] - seen_times[0]), 1)
            if len(seen_times) > 1 and seen_times[-1] > seen_times[0]
            else None,
            "warmup_job_s": round(warmup_s, 2),
            "jobs_phase_wall_s": round(jobs_wall, 2),
            "operator_cpu_s": round(sampler.cpu_s, 2),
            "operator_cpu_s_jobs_phase": round(cpu_jobs, 2),
            "operator_cpu_s_per_job": round(cpu_jobs / max(1, len(latency)), 4),
            "operator_cpu_cores_jobs_phase": round(cpu_jobs / jobs_wall, 3),
            "machine_busy_cores_jobs_phase": round(busy_jobs / jobs_wall, 3),
            "machine_steal_cores_jobs_phase": round(steal_jobs / jobs_wall, 3),
            "process_cores_jobs_phase": processes_jobs,
            "baseline_direct_process_cores": None if direct is None else direct.process_cores,
            "apiserver_watchers_closed_jobs_phase": closed_jobs,
            "baseline_direct_apiserver_watchers_closed": (
                None if direct is None else direct.watchers_closed
            ),
            "apiserver_requests_per_job": requests_jobs,
            "baseline_direct_apiserver_requests_per_job": None
            if direct is None
            else direct.apiserver_requests_per_job,
            "operator_steady_cpu_cores": round(steady_cores, 3) if steady_cores else None,
            "operator_rss_mib_before_jobs": round(rss_before_jobs, 1),
            "operator_peak_rss_mib": round(sampler.peak_rss_mib, 1),
            "operator_rss_mib_end": round(sampler.rss_mib, 1),
            "operator_vmhwm_mib": round(sampler.hwm_mib, 1),
            "operator_log_problems": problems,
            "watch_errors": len(watch.errors),
            "targets": {"p99_s": P99_TARGET_S, "rss_mib": RSS_TARGET_MIB},
            "met": met,
            "seed": args.seed,
            "cpus": os.cpu_count(),
            "cluster": "existing" if cluster.dev is None else f"own {args.name}",
            "cluster_up_s": round(cluster_up_s, 1),
            "nodes_ready_s": round(nodes_s, 1),
            "nodes_settled_s": round(settled_s, 1),
            "loadavg_start": load_start,
            "loadavg_end": loadavg(),
            "operator_log": str(log),
        }
    finally:
        if sampler is not None:
            sampler.stop()
        operator.stop()
        teardown(cluster, core, namespaces + direct_namespaces, run, args.keep)
    result["wall_s"] = round(time.monotonic() - started, 1)
    if not args.log and not args.keep and not examples:
        shutil.rmtree(work, ignore_errors=True)
        result["operator_log"] = None
    print_table(result, examples)
    print(json.dumps(result, separators=(",", ":")), flush=True)
    return 0


def teardown(
    cluster: Cluster, core: CoreV1Api, namespaces: list[str], run: str, keep: bool
) -> None:
    if keep:
        say(f"kept: KUBECONFIG={cluster.kubeconfig}")
        return
    if cluster.dev is not None:
        say(f"taking dev cluster {cluster.dev.name!r} down ...")
        cluster.dev.down()
        shutil.rmtree(cluster.dev.dir, ignore_errors=True)
        return
    for name in namespaces:
        try:
            core.delete_namespace(name)
        except ApiException as exc:
            say(f"  could not delete namespace {name}: {exc.status} {exc.reason}")
    core.delete_collection_node(label_selector=f"{BENCH_LABEL}={run}")


def print_table(r: dict[str, Any], examples: list[str]) -> None:
    lat, first, floor = (
        r["create_to_workers_s"],
        r["create_to_first_worker_s"],
        r["baseline_pod_create_to_watch_s"],
    )

    def row(label: str, values: dict[str, Any]) -> str:
        cells = "".join(
            f"{'-' if values[k] is None else format(values[k], '.3f'):>9}"
            for k in ("p50", "p95", "p99", "max")
        )
        return f"| {label:<44}|{cells} |"

    print(
        f"operator_scale: {r['jobs']} TrainingJobs ({r['workers']} workers) on {r['nodes']} "
        f"KWOK nodes x {r['gpus_per_node']} GPUs, target {r['rate_per_s']:g}/s, achieved "
        f"{r['achieved_rate_per_s']:g}/s, --training-interval={r['training_interval']}"
    )
    print(f"| {'seconds':<44}|{'p50':>9}{'p95':>9}{'p99':>9}{'max':>9} |")
    print(f"|{'-' * 45}|{'-' * 37}|")
    print(row("create -> all workers seen (operator)", lat))
    print(row("create -> first worker seen (operator)", first))
    if r["create_to_workers_stored_s"] is not None:
        print(row("create -> all workers stored (audit log)", r["create_to_workers_stored_s"]))
        print(row("worker stored -> seen by the watch", r["worker_stored_to_seen_s"]))
        print(row("create -> first status written (audit log)", r["create_to_first_status_s"]))
    print(row(f"baseline: pod create -> ADDED ({floor['pods']} pods)", floor))
    print(row("baseline: pod create sent -> ADDED", floor["from_send"]))
    print(row("baseline: pod create call", r["baseline_pod_create_call_s"]))
    print(row("TrainingJob create call (operator running)", r["job_create_call_s"]))
    print(row("due by the pace -> all workers", r["due_to_workers_s"]))
    if r["baseline_direct_create_to_workers_s"] is not None:
        print(
            row(
                "baseline: no operator, create -> all workers",
                r["baseline_direct_create_to_workers_s"],
            )
        )
        print(
            row("baseline: no operator, due -> all workers", r["baseline_direct_due_to_workers_s"])
        )
        if r["baseline_direct_create_to_workers_stored_s"] is not None:
            print(
                row(
                    "baseline: no operator, create -> all stored",
                    r["baseline_direct_create_to_workers_stored_s"],
                )
            )
    print()
    lines = [
        ("jobs done / created", f"{r['jobs_done']} / {r['jobs']} ({r['create_errors']} errors)"),
        ("warm-up job (operator start -> workers)", f"{r['warmup_job_s']} s"),
        ("jobs phase wall (first create -> last worker)", f"{r['jobs_phase_wall_s']} s"),
        ("operator CPU total", f"{r['operator_cpu_s']} s"),
        (
            "operator CPU jobs phase / per job",
            f"{r['operator_cpu_s_jobs_phase']} s / {r['operator_cpu_s_per_job'] * 1000:.1f} ms",
        ),
        (
            "CPU cores busy in jobs phase: operator / machine",
            f"{r['operator_cpu_cores_jobs_phase']} / {r['machine_busy_cores_jobs_phase']}",
        ),
        (
            "machine busy cores, baseline with no operator",
            f"{r['baseline_direct_machine_busy_cores']}",
        ),
        (
            "jobs/s the baseline's threads kept up",
            f"{r['baseline_direct_achieved_rate_per_s']}",
        ),
        ("cores by process, jobs phase", _cores(r["process_cores_jobs_phase"])),
        ("cores by process, baseline", _cores(r["baseline_direct_process_cores"])),
        (
            "watchers the apiserver closed (fell behind)",
            f"{r['apiserver_watchers_closed_jobs_phase']} in the jobs phase / "
            f"{r['baseline_direct_apiserver_watchers_closed']} in the baseline",
        ),
        ("operator steady CPU with all jobs (cores)", f"{r['operator_steady_cpu_cores']}"),
        ("jobs with no status when the operator stopped", f"{r['jobs_without_status']}"),
        ("worker pods seen per second (jobs phase)", f"{r['workers_seen_per_s']}"),
        (
            "p50 create -> workers by create-order decile",
            " ".join(
                "-" if v is None else f"{v:.1f}"
                for v in r["create_to_workers_p50_by_create_decile_s"]
            ),
        ),
        (
            "operator RSS before jobs / peak / VmHWM / end",
            f"{r['operator_rss_mib_before_jobs']} / {r['operator_peak_rss_mib']} / "
            f"{r['operator_vmhwm_mib']} / {r['operator_rss_mib_end']} MiB",
        ),
        (
            "operator log ERROR lines / Tracebacks: running",
            "{errors} / {tracebacks}".format(**r["operator_log_problems"]["running"]),
        ),
        (
            "operator log ERROR lines / Tracebacks: stopping",
            "{errors} / {tracebacks}".format(**r["operator_log_problems"]["stopping"]),
        ),
        ("target p99 < 5 s (all jobs done)", "met" if r["met"]["p99"] else "NOT met"),
        (
            "the same, workers stored (audit log)",
            "-"
            if r["create_to_workers_stored_s"] is None
            else "met"
            if r["met"]["p99_stored"]
            else "NOT met",
        ),
        ("target RSS < 300 MiB", "met" if r["met"]["rss"] else "NOT met"),
        ("load average start / end", f"{r['loadavg_start']} / {r['loadavg_end']}"),
        ("wall", f"{r['wall_s']} s"),
    ]
    for label, value in lines:
        print(f"  {label:<48} {value}")
    for line in examples:
        print(f"  log: {line[:200]}")


def _cores(cores: dict[str, float] | None) -> str:
    return "-" if not cores else " ".join(f"{name} {value:.2f}" for name, value in cores.items())


if __name__ == "__main__":
    sys.exit(main())
