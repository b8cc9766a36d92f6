"""The `sparsam` command.

    sparsam dev-cluster up [--gpu-nodes] [--real-nodes N]
                                             a real control plane on loopback, with our CRDs;
                                             real nodes run containers (kubelet + containerd)
    sparsam dev-cluster node add NAME [--gpu TYPE] [--capacity-type spot|on-demand]
    sparsam dev-cluster node vanish NAME     a real node gone as a spot instance goes
    sparsam dev-cluster build                build (or find) its binaries, print their folder
    sparsam dev-cluster down|status|kubeconfig
    sparsam dev-cluster kubectl -- ARGS      the cluster's own kubectl, pointed at it
    sparsam images build [NAME ...]          sparsam's container images as OCI archives
                                             (no Docker); print each one's path, ref, size
    sparsam images lock                      re-pin the images' Python packages
    sparsam demo [--no-run]                  dev cluster + GPU nodes + examples/, `kubectl get`,
                                             then sparsam at work: training, serving, scale
                                             to zero and wake
    sparsam run [--kubeconfig PATH]          the operator (in a pod: the service account)
    sparsam activator [--port 8081]          route, hold and wake InferenceService traffic
    sparsam simulate [--max-jobs N] [--seed S] [--out DIR] [--spot-pools N] [--spot-hazard H]
        [--refusal-trace CSV | --refused-fraction F] [--group-loss-rate R]
                                             replay the Philly trace through the capacity
                                             planner: static vs reactive vs sparsam

Errors the user can act on print one line and exit 1; they never print a traceback.
"""

from __future__ import annotations

import argparse
import math
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any

from sparsam import __version__
from sparsam.activator import cli as activator_cli
from sparsam.api import constants as c
from sparsam.api.parse import parse_duration
from sparsam.config import OperatorConfig
from sparsam.decisions.cost import PriceTable
from sparsam.decisions.interruption import DEFAULT_INTERRUPTION_TAINTS
from sparsam.devcluster import realnodes
from sparsam.devcluster.bootstrap import REPO_ROOT, bring_up, image_archives, install_crds
from sparsam.devcluster.cluster import DEFAULT_NAME, DevCluster, kubectl_runner
from sparsam.devcluster.errors import DevClusterError
from sparsam.devcluster.images import IMAGES, ensure_image, lock_requirements
from sparsam.devcluster.nodeconfig import MAX_REAL_NODES, check_count
from sparsam.devcluster.nodes import SHAPES
from sparsam.devcluster.realnodes import NodeSpec
from sparsam.devcluster.tools import KUBERNETES, REAL_NODE_TOOLS, TOOLS, ensure_binaries
from sparsam.simulate.compare import Settings, compare
from sparsam.simulate.market import OutageModel, RefusalTrace, load_refusal_csv
from sparsam.simulate.scenarios import MarketScenario
from sparsam.simulate.traces import (
    PHILLY_FILE,
    SPOT_ADVISOR_FILE,
    SimulationError,
    default_trace_dir,
)

DEMO_NAMESPACE = "sparsam-demo"


def _say(message: str) -> None:
    print(f"sparsam: {message}", file=sys.stderr, flush=True)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sparsam", description=__doc__.split("\n\n")[0])
    parser.add_argument("--version", action="version", version=f"sparsam {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)

    dev = commands.add_parser(
        "dev-cluster",
        help="a real local control plane (etcd, "
        "kube-apiserver, controller-manager, scheduler, KWOK)",
    )
    dev_commands = dev.add_subparsers(dest="action", required=True)
    up = dev_commands.add_parser("up", help="start the cluster (builds the binaries once)")
    up.add_argument(
        "--gpu-nodes", action="store_true", help="also create KWOK GPU nodes (spot and on-demand)"
    )
    up.add_argument(
        "--real-nodes",
        type=int,
        default=0,
        metavar="N",
        help=f"also start N real nodes (1 to {MAX_REAL_NODES}): a kubelet and containerd each, "
        "running real containers; needs root and `make container-tools`",
    )
    _images_argument(up)
    node = dev_commands.add_parser("node", help="add a real node, or make one vanish")
    node_commands = node.add_subparsers(dest="node_action", required=True)
    add = node_commands.add_parser("add", help="start a real node and wait until it is Ready")
    add.add_argument("node", metavar="NAME")
    add.add_argument(
        "--gpu",
        choices=sorted(SHAPES),
        default=None,
        metavar="TYPE",
        help="present the node as this GPU instance type: nvidia.com/gpu capacity, its labels "
        f"and taints (one of {', '.join(sorted(SHAPES))}); its pods run on the CPU",
    )
    add.add_argument(
        "--capacity-type",
        choices=(c.CAPACITY_SPOT, c.CAPACITY_ON_DEMAND),
        default=c.CAPACITY_ON_DEMAND,
        help="its karpenter.sh/capacity-type label; spot also taints it (default on-demand)",
    )
    _images_argument(add)
    vanish = node_commands.add_parser(
        "vanish",
        help="kill the node's kubelet, containerd and containers (SIGKILL) and delete its Node",
    )
    vanish.add_argument("node", metavar="NAME")
    for sub in (
        up,
        add,
        vanish,
        *(
            dev_commands.add_parser(name, help=text)
            for name, text in (
                ("build", "build the binaries into the cache (once) and print where they are"),
                ("down", "stop every process of the cluster"),
                ("status", "which components are running"),
                ("kubeconfig", "print the path of the admin kubeconfig"),
                (
                    "kubectl",
                    "run the cluster's kubectl against it: sparsam dev-cluster kubectl -- get "
                    "nodes",
                ),
            )
        ),
    ):
        sub.add_argument(
            "--name",
            default=DEFAULT_NAME,
            help=f"which dev cluster (default {DEFAULT_NAME}); several can run side by side",
        )
        sub.add_argument(
            "--bin-dir",
            type=Path,
            default=None,
            help="use the binaries in this folder instead of building them (also SPARSAM_BIN_DIR)",
        )
        if sub.prog.endswith("kubectl"):
            sub.add_argument("args", nargs=argparse.REMAINDER)

    demo = commands.add_parser(
        "demo",
        help="bring up the dev cluster with GPU nodes, apply "
        "examples/ and show what sparsam's resources look like",
    )
    demo.add_argument(
        "--kubeconfig",
        type=Path,
        default=None,
        help="use this existing cluster instead of the dev cluster",
    )
    demo.add_argument("--bin-dir", type=Path, default=None)
    demo.add_argument("--name", default=DEFAULT_NAME)
    demo.add_argument(
        "--no-run",
        action="store_true",
        help="only apply examples/; do not start sparsam (operator, activator, Prometheus) "
        "for the training and serving walkthrough",
    )
    _images_parser(commands)
    _simulate_parser(commands)
    _run_parser(commands)
    activator_cli.add_parser(commands)
    return parser


def _images_parser(commands: Any) -> None:
    images = commands.add_parser(
        "images",
        help="sparsam's container images, built as OCI archives without Docker "
        "(containerd's `ctr images import` and skopeo read them)",
    )
    actions = images.add_subparsers(dest="action", required=True)
    build = actions.add_parser(
        "build",
        help="build the images the cache lacks (needs root, debootstrap) and print each "
        "archive's path, reference and size",
    )
    build.add_argument(
        "names",
        nargs="*",
        metavar="NAME",
        help=f"which images (default all): {', '.join(IMAGES)}",
    )
    actions.add_parser(
        "lock",
        help="re-pin images/*.requirements.txt: pyproject.toml's dependencies resolved at "
        "the versions this Python has installed",
    )


def _images(args: argparse.Namespace) -> int:
    if args.action == "lock":
        for path in lock_requirements():
            print(path)
        return 0
    names = args.names or list(IMAGES)
    unknown = [name for name in names if name not in IMAGES]
    if unknown:
        raise DevClusterError(f"no image named {unknown[0]!r}: choose from {', '.join(IMAGES)}")
    for name in names:
        _say(f"image {name}: building what the cache lacks")
        archive = ensure_image(name)
        print(f"{archive.path}  {archive.ref}  {archive.size_bytes / 1e6:.1f} MB", flush=True)
    return 0


def _run_parser(commands: Any) -> None:
    run = commands.add_parser(
        "run",
        help="run the operator: watch sparsam's resources, Nodes and Pods, and act",
        description="In a pod it uses its service account; elsewhere --kubeconfig, else "
        "$KUBECONFIG or ~/.kube/config.",
    )
    run.add_argument("--kubeconfig", type=Path, default=None)
    defaults = OperatorConfig()
    for flag, what in (
        ("--capacity-interval", "how often each GPUNodePool is reconciled"),
        ("--training-interval", "how often each TrainingJob is reconciled"),
        ("--policy-interval", "how often each CostPolicy's spending is counted"),
        ("--serving-interval", "how often each InferenceService's replicas are decided"),
        ("--offering-ttl", "how long a pool that ran out of capacity gets no new nodes"),
    ):
        default: timedelta = getattr(defaults, flag[2:].replace("-", "_"))
        run.add_argument(
            flag, type=_duration, default=default, help=f"{what} (default {_go(default)})"
        )
    run.add_argument(
        "--interruption-taint",
        action="append",
        default=None,
        metavar="KEY",
        help="a taint key that announces a node's interruption (repeatable; replaces the "
        "defaults: " + ", ".join(DEFAULT_INTERRUPTION_TAINTS) + ")",
    )
    run.add_argument(
        "--interruption-condition",
        action="append",
        default=[],
        metavar="TYPE",
        help="a node condition type that, when True, announces an interruption (repeatable)",
    )
    run.add_argument(
        "--price",
        action="append",
        default=[],
        type=_price,
        metavar="GPU_TYPE/CAPACITY_TYPE=PRICE",
        help="price per GPU-hour of nodes that belong to no GPUNodePool, e.g. "
        "NVIDIA-A10G/spot=0.45 or */on-demand=2.5 (repeatable)",
    )
    run.add_argument(
        "--prometheus-url",
        default=None,
        metavar="URL",
        help="the Prometheus InferenceService traffic is read from; without it replicas "
        "are never scaled down or to zero",
    )
    for metric in ("rps", "concurrency", "last-request"):
        run.add_argument(
            f"--{metric}-query",
            default=None,
            metavar="PROMQL",
            help=f"PromQL for an InferenceService's {metric} instead of the activator's "
            "metrics; {namespace} and {name} are replaced by the service's",
        )
    run.add_argument(
        "--activator-url",
        default=None,
        metavar="URL",
        help="the activator's base URL; InferenceServices are called at URL/NAMESPACE/NAME",
    )
    run.add_argument(
        "--server-image",
        default=defaults.server_image,
        help=f"model-server image for InferenceServices without spec.image "
        f"(default {defaults.server_image})",
    )
    run.add_argument(
        "--spot-pool-max-share",
        type=_share,
        default=defaults.spot_pool_max_share,
        metavar="FRACTION",
        help="at most this share of the nodes of the healthy spot pools a pod may use sits in "
        "any one pool: new nodes are spread (default "
        f"{defaults.spot_pool_max_share:g}: no cap, the cheapest pool takes all)",
    )
    run.add_argument(
        "--status-writes-per-second",
        type=_positive,
        default=defaults.status_writes_per_second,
        metavar="RATE",
        help="status reports a second per kind; in a burst of changes the rest wait for "
        "each object's next pass, and the workers' pods go first "
        f"(default {defaults.status_writes_per_second:g})",
    )
    run.add_argument(
        "--log-format",
        choices=("text", "json"),
        default="text",
        help="json: one JSON object per log record, for log pipelines (default text)",
    )
    run.add_argument(
        "--metrics-port", type=int, default=None, help="serve the operator's /metrics here"
    )
    run.add_argument(
        "--liveness",
        default=None,
        metavar="URL",
        help="serve Kopf's liveness probe, e.g. http://0.0.0.0:8080/healthz",
    )
    run.add_argument(
        "--peering",
        default=None,
        metavar="NAME",
        help="run as one of several replicas: they meet in the ClusterKopfPeering NAME (its "
        "CRD must be installed) and only the one of the highest --priority acts; "
        "default: standalone, for a single replica",
    )
    run.add_argument(
        "--namespace",
        action="append",
        default=[],
        type=_namespace,
        metavar="NAMESPACE",
        help="serve only this namespace's TrainingJobs and InferenceServices (repeatable); "
        "default: every namespace. GPUNodePools, CostPolicies and nodes are served either way",
    )
    run.add_argument(
        "--priority",
        type=int,
        default=0,
        help="this replica's priority among its peers (default 0; with --peering only)",
    )


def _images_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--images",
        type=lambda text: [name for name in text.split(",") if name],
        default=[],
        metavar="NAME,...",
        help="our images to import into each real node, beside the pause image "
        "(e.g. trainer-cpu,operator); pods use them with imagePullPolicy IfNotPresent",
    )


def _go(duration: timedelta) -> str:
    """A whole-second duration as Go writes it: 90s -> 1m30s."""
    minutes, seconds = divmod(int(duration.total_seconds()), 60)
    return (f"{minutes}m" if minutes else "") + (f"{seconds}s" if seconds or not minutes else "")


def _price(text: str) -> tuple[tuple[str, str], float]:
    key, _, value = text.partition("=")
    gpu_type, _, capacity = key.partition("/")
    try:
        price = float(value)
    except ValueError:
        price = -1.0
    if not gpu_type or capacity not in ("spot", "on-demand") or price < 0:
        raise argparse.ArgumentTypeError(
            f"--price {text!r}: expected GPU_TYPE/CAPACITY_TYPE=PRICE with CAPACITY_TYPE spot "
            "or on-demand and PRICE >= 0, e.g. NVIDIA-A10G/spot=0.45"
        )
    return (gpu_type, capacity), price


def _run(args: argparse.Namespace) -> int:
    # kopf and the API client are imported only for this command.
    from sparsam.kube.errors import ApiRefused
    from sparsam.main import run

    try:
        run(run_config(args))
    except ApiRefused as exc:  # e.g. a --peering object that does not exist
        _say(f"error: {exc}")
        return 1
    return 0


def run_config(args: argparse.Namespace) -> OperatorConfig:
    """`sparsam run`'s flags as the operator's configuration."""
    return OperatorConfig(
        kubeconfig=args.kubeconfig,
        capacity_interval=args.capacity_interval,
        training_interval=args.training_interval,
        policy_interval=args.policy_interval,
        status_writes_per_second=args.status_writes_per_second,
        serving_interval=args.serving_interval,
        offering_ttl=args.offering_ttl,
        spot_pool_max_share=args.spot_pool_max_share,
        interruption_taints=tuple(args.interruption_taint or DEFAULT_INTERRUPTION_TAINTS),
        interruption_conditions=tuple(args.interruption_condition),
        liveness=args.liveness,
        metrics_port=args.metrics_port,
        log_format=args.log_format,
        prices=PriceTable(dict(args.price)),
        prometheus_url=args.prometheus_url,
        rps_query=args.rps_query,
        concurrency_query=args.concurrency_query,
        last_request_query=args.last_request_query,
        activator_url=args.activator_url,
        server_image=args.server_image,
        peering=args.peering,
        priority=args.priority,
        namespaces=tuple(dict.fromkeys(args.namespace)),
    )


def _namespace(text: str) -> str:
    """A namespace's name as Kubernetes allows it (RFC 1123 label)."""
    if not re.fullmatch(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?", text):
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a namespace name (lowercase letters, digits and '-', at most 63)"
        )
    return text


def _duration(text: str) -> timedelta:
    try:
        return parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def positive_count(text: str) -> int:
    """An argparse type: a whole number of at least 1 (the benchmarks use it too)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def _non_negative(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value >= 0):
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {text!r}")
    return value


def _share(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and 0 < value <= 1):
        raise argparse.ArgumentTypeError(f"expected a fraction in (0, 1], got {text!r}")
    return value


def _positive(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"expected a number > 0, got {text!r}")
    return value


def _simulate_parser(commands: Any) -> None:
    traces = default_trace_dir()
    sim = commands.add_parser(
        "simulate",
        help="replay a GPU job trace through the capacity planner and compare a static "
        "on-demand pool, a reactive on-demand autoscaler and sparsam (spot + fallback)",
        description="Prints the assumptions, a markdown table, the plot's path, and a JSON "
        "summary as the last line.",
    )
    sim.add_argument("--trace", type=Path, default=traces / PHILLY_FILE, help="Philly jobs JSON")
    sim.add_argument(
        "--spot-advisor", type=Path, default=traces / SPOT_ADVISOR_FILE, help="Spot Advisor JSON"
    )
    sim.add_argument("--max-jobs", type=positive_count, default=None, help="only the first N jobs")
    sim.add_argument("--seed", type=int, default=0, help="seed of the preemption draws")
    sim.add_argument("--out", type=Path, default=None, help="folder for the plot (default: temp)")
    sim.add_argument("--region", default="us-east-1")
    sim.add_argument("--instance-type", default="p4d.24xlarge")
    sim.add_argument("--gpus-per-node", type=int, default=None, help="if not a known type")
    sim.add_argument("--provisioning-delay", type=_duration, default=timedelta(minutes=2))
    sim.add_argument(
        "--checkpoint-cost", type=_duration, default=timedelta(minutes=1), help="C, per checkpoint"
    )
    sim.add_argument(
        "--scale-down-after",
        type=_duration,
        default=timedelta(minutes=10),
        help="sparsam's pools' scaleDownAfter (default 10m as in GPUNodePool; reactive: 10m)",
    )
    sim.add_argument(
        "--monthly-interruption",
        type=float,
        default=None,
        help="monthly interruption probability, instead of the Spot Advisor band's midpoint",
    )
    market = sim.add_argument_group(
        "spot market",
        "the sparsam policy's spot pools (docs/simulator.md); default: the "
        "Spot Advisor band's hazard, one pool, never refused",
    )
    market.add_argument(
        "--spot-pools", type=positive_count, default=1, help="independent spot pools"
    )
    market.add_argument(
        "--spot-hazard",
        type=_non_negative,
        default=None,
        help="preemptions per node-hour, instead of the Spot Advisor band's",
    )
    refusals = market.add_mutually_exclusive_group()
    refusals.add_argument(
        "--refusal-trace",
        type=Path,
        default=None,
        help="CSV of timestamp,state (available|refused) rows; every spot pool refuses as it says",
    )
    refusals.add_argument(
        "--refused-fraction",
        type=float,
        default=None,
        help="generate outages: this fraction of the time refused, per pool, independently",
    )
    market.add_argument("--outage-median", type=_duration, default=timedelta(hours=1))
    market.add_argument("--outage-p90", type=_duration, default=timedelta(hours=4))
    market.add_argument(
        "--group-loss-rate",
        type=_non_negative,
        default=0.0,
        help="group losses per pool-hour (each takes --group-loss-fraction of the pool's nodes)",
    )
    market.add_argument("--group-loss-fraction", type=float, default=1.0)


def _market(args: argparse.Namespace) -> MarketScenario:
    """The spot market the flags describe; SimulationError when they describe none."""
    refusals: RefusalTrace | OutageModel | None = None
    if args.refusal_trace is not None:
        refusals = load_refusal_csv(args.refusal_trace)
    elif args.refused_fraction is not None:
        refusals = OutageModel(
            args.refused_fraction,
            args.outage_median.total_seconds(),
            args.outage_p90.total_seconds(),
        )
    scenario = MarketScenario(
        "flags",
        args.spot_pools,
        hazard_per_hour=args.spot_hazard,
        refusals=refusals,
        group_loss_per_hour=args.group_loss_rate,
        group_loss_fraction=args.group_loss_fraction,
    )
    scenario.market(0.0)  # validates the rest
    return scenario


def _simulate(args: argparse.Namespace) -> int:
    out = args.out or Path(tempfile.mkdtemp(prefix="sparsam-simulate-"))
    settings = Settings(
        trace=args.trace,
        spot_advisor=args.spot_advisor,
        max_jobs=args.max_jobs,
        seed=args.seed,
        region=args.region,
        instance_type=args.instance_type,
        gpus_per_node=args.gpus_per_node,
        provisioning_delay=args.provisioning_delay,
        checkpoint_cost=args.checkpoint_cost,
        sparsam_scale_down=args.scale_down_after,
        monthly_interruption=args.monthly_interruption,
        market=_market(args),
    )
    result = compare(settings, out)
    print(result.markdown())
    print(f"out: {out}")
    print(result.json_line(), flush=True)
    return 0


def _dev_cluster(args: argparse.Namespace) -> int:
    cluster = DevCluster(args.name)
    if args.action == "up":
        if args.real_nodes:
            check_count(args.real_nodes)
        bring_up(
            cluster,
            gpu_nodes=args.gpu_nodes,
            real_nodes=args.real_nodes,
            node_images=args.images,
            bin_dir=args.bin_dir,
            log=_say,
        )
        print(cluster.kubeconfig)
    elif args.action == "node":
        return _node(cluster, args)
    elif args.action == "build":
        # Everything `up --real-nodes` needs too, so that no later step builds in the middle.
        binaries = ensure_binaries(
            args.bin_dir, TOOLS if args.bin_dir else (*TOOLS, *REAL_NODE_TOOLS)
        )
        for name, path in sorted(binaries.paths.items()):
            print(f"{name:<24} {path}")
    elif args.action == "down":
        stopped = cluster.down()
        _say(f"stopped {', '.join(p.name for p in stopped) or 'nothing (not running)'}")
    elif args.action == "status":
        return _status(cluster, args.name)
    elif args.action == "kubeconfig":
        if not cluster.kubeconfig.is_file():
            raise DevClusterError(
                f"dev cluster {args.name!r} was never started: run `sparsam dev-cluster up`"
            )
        print(cluster.kubeconfig)
    elif args.action == "kubectl":
        binaries = ensure_binaries(args.bin_dir, tools=(KUBERNETES,))
        rest = args.args[1:] if args.args[:1] == ["--"] else args.args
        command = [str(binaries["kubectl"]), f"--kubeconfig={cluster.kubeconfig}", *rest]
        return subprocess.call(command)
    return 0


def _status(cluster: DevCluster, name: str) -> int:
    state = cluster.state()
    status = cluster.status()
    if state is None or not status:
        print(f"{name}: {'stopped' if state else 'not created'}")
        return 1
    by_name = {p.name: p for p in state.processes}
    for process_name, alive in status.items():
        process = by_name[process_name]
        line = f"{process_name:<28} {'running' if alive else 'stopped':<8} pid {process.pid}"
        record = cluster.supervision(process)
        if record is not None:
            # The supervisor's pid keeps the line's place; the component's own follows.
            line += f" (child {record.pid or '-'}), restarts {record.restarts}"
            if record.last_exit is not None:
                line += f", last exit {record.last_exit} at {record.last_exit_at}"
            if record.gave_up:
                line += ", gave up (too many restarts)"
        print(line)
    if state.network is not None:
        network = state.network
        print(f"pod network {network.subnet} on bridge {network.bridge}, DNS {network.gateway}")
    for node in state.real_nodes:
        what = f"GPU {node.gpu}" if node.gpu else "CPU"
        print(f"real node {node.name:<18} {node.ip:<12} {what}, {node.capacity_type}")
    return 0 if cluster.running() and all(status.values()) else 1


def _node(cluster: DevCluster, args: argparse.Namespace) -> int:
    binaries = ensure_binaries(args.bin_dir, tools=(KUBERNETES, *REAL_NODE_TOOLS))
    kubectl = kubectl_runner(binaries["kubectl"], cluster.kubeconfig)
    if args.node_action == "add":
        spec = NodeSpec(args.node, args.gpu, args.capacity_type)
        spec.check()
        archives = image_archives(args.images)
        realnodes.add_nodes(
            cluster, binaries, [spec], archives[0], archives[1:], kubectl, _say, existing_ok=False
        )
        return 0
    stopped = realnodes.vanish(cluster, args.node, kubectl)
    _say(f"node {args.node} vanished: killed {', '.join(p.name for p in stopped) or 'nothing'}")
    return 0


def _demo(args: argparse.Namespace) -> int:
    if args.kubeconfig is not None:
        kubectl_path = os.environ.get("KUBECTL") or shutil.which("kubectl")
        if kubectl_path is None:
            raise DevClusterError("kubectl is not on PATH (set KUBECTL to its path)")
        kubeconfig: Path = args.kubeconfig
        kubectl_bin = Path(kubectl_path)
    else:
        cluster = DevCluster(args.name)
        binaries = bring_up(cluster, gpu_nodes=True, bin_dir=args.bin_dir, log=_say)
        kubeconfig, kubectl_bin = cluster.kubeconfig, binaries["kubectl"]
    run = kubectl_runner(kubectl_bin, kubeconfig)
    if args.kubeconfig is not None:
        install_crds(run)
    run(
        "apply",
        "-f",
        "-",
        input=run("create", "namespace", DEMO_NAMESPACE, "--dry-run=client", "-o", "yaml"),
    )
    examples = sorted((REPO_ROOT / "examples").glob("*.yaml"))
    for path in examples:
        _say(f"kubectl apply -f examples/{path.name}")
        print(run("apply", "-n", DEMO_NAMESPACE, "-f", str(path)), end="")
    for what in ("gpunodepools", "costpolicies", "trainingjobs", "inferenceservices"):
        _say(f"kubectl get {what}")
        print(run("get", what, "-n", DEMO_NAMESPACE), end="")
    _say("kubectl get nodes (GPU nodes are KWOK nodes: the real scheduler places pods there)")
    print(
        run(
            "get",
            "nodes",
            "-L",
            "karpenter.sh/capacity-type,node.kubernetes.io/instance-type,nvidia.com/gpu.product",
        ),
        end="",
    )
    if not args.no_run:
        _walkthrough(kubeconfig, run)
    _say(
        f"the cluster keeps running: export KUBECONFIG={kubeconfig}; "
        "stop it with `sparsam dev-cluster down`"
    )
    return 0


def _walkthrough(kubeconfig: Path, run: Any) -> None:
    """sparsam at work: the operator, the activator and Prometheus started on this machine."""
    from sparsam.demo import walkthrough  # the kubernetes client only for this

    missing = walkthrough.prerequisites()
    if missing is not None:
        _say(f"skipping the walkthrough (training, serving, scale to zero): {missing}")
        return
    work = Path(tempfile.mkdtemp(prefix="sparsam-demo-"))
    walkthrough.walk(kubeconfig, run, DEMO_NAMESPACE, work, _say)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "dev-cluster":
            return _dev_cluster(args)
        if args.command == "images":
            return _images(args)
        if args.command == "simulate":
            return _simulate(args)
        if args.command == "activator":
            return activator_cli.run(args)
        if args.command == "run":
            return _run(args)
        return _demo(args)
    except (DevClusterError, SimulationError) as exc:
        _say(f"error: {exc}")
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
