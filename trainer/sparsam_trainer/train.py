"""``python -m sparsam_trainer train``: elastic DDP training that survives preemption.

Run it under torchrun, one agent per pod::

    torchrun --nnodes=1:4 --nproc-per-node=1 --rdzv-backend=c10d \\
        --rdzv-endpoint=$HEAD:29400 --rdzv-id=$JOB --max-restarts=10 \\
        -m sparsam_trainer train --task mnist-cnn --epochs 5 \\
        --output-dir /out --checkpoint-dir /ckpt --checkpoint-interval 10m

or without torchrun as a world of one. What makes it cheap to run on spot capacity:

- Every start resumes from the newest complete checkpoint in ``--checkpoint-dir`` (see
  :mod:`sparsam_trainer.checkpoint`), which holds model, optimizer, scheduler, RNG state and the
  global data position, so a resumed run continues the same trajectory.
- ``--batch-size`` is the GLOBAL batch; each rank trains on its share, and the loss is scaled so
  the averaged gradient is the mean over the global batch. The trajectory therefore does not
  depend on how many workers there are (up to the order of floating-point sums), and torchrun
  can re-rendezvous with fewer or more of them (after a lost node, with ``--max-restarts``) and
  continue from the last checkpoint.
- SIGTERM (what the kubelet sends before a spot node goes) finishes the current step; all ranks
  agree on the stop step, rank 0 writes a checkpoint, and every rank exits with
  :data:`~sparsam_trainer.exitcodes.PREEMPTED` (75). torchrun, when it is the one signalled,
  forwards SIGTERM to its workers but then exits 1 itself, whatever they returned; the
  ``preempted`` progress record is what tells a preemption from a failure there.

Determinism: the same seed, world size and device give bitwise-identical results. Dropout and
other torch randomness are reseeded every step from ``(seed, step, rank)``, so they too continue
identically after a resume at the same world size.

At the end rank 0 writes ``<output-dir>/model.pt``: ``{"task", "labels", "input_spec", "model"
(state_dict), "metrics" (test split: accuracy, macro_f1, loss, samples), "validation"
(its metrics), "step"}``, which ``compress`` reads.
"""

from __future__ import annotations

import argparse
import logging
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import TensorDataset

from sparsam_trainer import checkpoint, exitcodes
from sparsam_trainer.arguments import FRACTION, POSITIVE
from sparsam_trainer.data import global_batches, shard, subset_indices
from sparsam_trainer.distributed import (
    StopRequest,
    World,
    agree,
    all_reduce_sum,
    barrier,
    init_world,
    shutdown,
)
from sparsam_trainer.evaluation import evaluate
from sparsam_trainer.intervals import Interval, parse_interval
from sparsam_trainer.progress import ProgressWriter
from sparsam_trainer.rng import rng_state, seed_everything, seed_step, set_rng_state
from sparsam_trainer.schedule import warmup_cosine
from sparsam_trainer.tasks import TASK_NAMES, Splits, get_task
from sparsam_trainer.tasks import entrypoint as user_entrypoint
from sparsam_trainer.telemetry import CheckpointMetrics

log = logging.getLogger("sparsam_trainer.train")

# Learning rates that train each built-in task well; --lr overrides. A fine-tuned transformer
# wants a far smaller step than a CNN trained from scratch.
DEFAULT_LR = {"mnist-cnn": 3e-3, "bbc-minilm": 5e-5}
FALLBACK_LR = 1e-3


class UsageError(Exception):
    """Bad input from the user; reported as one line and exit code 2."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m sparsam_trainer train",
        description="Elastic DDP training with atomic checkpoints (run under torchrun).",
    )
    what = parser.add_mutually_exclusive_group(required=True)
    what.add_argument("--task", choices=TASK_NAMES, help="a built-in task")
    what.add_argument(
        "--entrypoint",
        metavar="MODULE:FUNCTION",
        help="user code: FUNCTION() returns (model, splits, loss)",
    )
    parser.add_argument("--epochs", type=POSITIVE, default=3)
    parser.add_argument(
        "--batch-size", type=POSITIVE, default=64, help="global batch size (all ranks)"
    )
    parser.add_argument("--lr", type=float, default=None, help="peak AdamW learning rate")
    parser.add_argument("--weight-decay", type=float, default=0.01)
    parser.add_argument(
        "--warmup-fraction",
        type=FRACTION,
        default=0.1,
        help="fraction of all steps with linear warmup before the cosine decay",
    )
    parser.add_argument("--seed", type=int, default=0)
    # In a TrainingJob pod the operator sets the SPARSAM_* variables, so the job's args only
    # need to say what to train.
    parser.add_argument(
        "--output-dir",
        type=Path,
        default=os.environ.get("SPARSAM_OUTPUT_DIR") or os.environ.get("SPARSAM_CHECKPOINT_DIR"),
        help="where model.pt goes; default $SPARSAM_OUTPUT_DIR, else $SPARSAM_CHECKPOINT_DIR",
    )
    parser.add_argument(
        "--checkpoint-dir",
        type=Path,
        default=os.environ.get("SPARSAM_CHECKPOINT_DIR"),
        help="default $SPARSAM_CHECKPOINT_DIR, else <output-dir>/checkpoints",
    )
    parser.add_argument(
        "--checkpoint-interval",
        type=_interval,
        default=os.environ.get("SPARSAM_CHECKPOINT_INTERVAL", "10m"),
        help="a Go duration (90s, 10m, 1h30m) or a step count (200steps); "
        "default $SPARSAM_CHECKPOINT_INTERVAL, else 10m",
    )
    parser.add_argument("--keep-checkpoints", type=POSITIVE, default=3, metavar="K")
    parser.add_argument("--max-train-samples", type=POSITIVE, default=None)
    parser.add_argument(
        "--max-eval-samples",
        type=POSITIVE,
        default=None,
        help="cap on validation and test samples (fixed subset), for quick runs",
    )
    parser.add_argument(
        "--progress-file",
        type=Path,
        default=os.environ.get("SPARSAM_PROGRESS_FILE"),
        help="JSON lines for the operator; default $SPARSAM_PROGRESS_FILE, else none",
    )
    parser.add_argument("--progress-every", type=POSITIVE, default=10, metavar="STEPS")
    parser.add_argument(
        "--collective-timeout",
        type=POSITIVE,
        default=300,
        metavar="SECONDS",
        help="how long a rank waits for its peers before failing (and torchrun restarting)",
    )
    return parser


def _interval(text: str) -> Interval:
    try:
        return parse_interval(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


@dataclass(frozen=True)
class Problem:
    """What to train, whether it came from a built-in task or an --entrypoint."""

    name: str
    labels: tuple[str, ...]
    input_spec: dict[str, Any] | None
    model: torch.nn.Module
    splits: Splits
    loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def _problem_loader(args: argparse.Namespace) -> Callable[[], Problem]:
    """Validate the task choice before joining the process group; load it afterwards."""
    seed: int = args.seed
    if args.entrypoint is not None:
        spec: str = args.entrypoint
        try:
            function = user_entrypoint.resolve(spec)
        except user_entrypoint.EntrypointError as exc:
            raise UsageError(str(exc)) from None

        def load_user() -> Problem:
            try:
                task = user_entrypoint.load(spec, function)
            except user_entrypoint.EntrypointError as exc:
                raise UsageError(str(exc)) from None
            parts = (task.splits.train, task.splits.validation, task.splits.test)
            num_labels = 1 + max(int(part.tensors[-1].max()) for part in parts)
            return Problem(
                name=f"entrypoint:{spec}",
                labels=tuple(str(i) for i in range(num_labels)),
                input_spec=None,
                model=task.model,
                splits=task.splits,
                loss=task.loss,
            )

        return load_user

    builtin = get_task(args.task)

    def load_builtin() -> Problem:
        return Problem(
            name=builtin.name,
            labels=builtin.labels,
            input_spec=builtin.input_spec(),
            model=builtin.build_model(),
            splits=builtin.splits(seed),
            loss=F.cross_entropy,
        )

    return load_builtin


def main(argv: Sequence[str]) -> int:
    parser = build_parser()
    args = parser.parse_args(list(argv))
    if args.output_dir is None:
        parser.error("--output-dir is required (or set SPARSAM_OUTPUT_DIR)")
    # One voice in the pod log: the other ranks report only problems.
    is_main = os.environ.get("RANK", "0") == "0"
    logging.basicConfig(
        level=logging.INFO if is_main else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        load_problem = _problem_loader(args)
    except UsageError as exc:
        log.error("%s", exc)
        return exitcodes.USAGE
    world = init_world(timedelta(seconds=args.collective_timeout))
    stop = StopRequest()
    stop.install()
    try:
        seed_everything(args.seed)
        return Trainer(args, world, stop, load_problem()).run()
    except UsageError as exc:
        log.error("%s", exc)
        return exitcodes.USAGE
    finally:
        stop.uninstall()
        shutdown(world)


def _limit(dataset: TensorDataset, limit: int | None, seed: int) -> TensorDataset:
    indices = subset_indices(len(dataset), limit, seed)
    if indices is None:
        return dataset
    return TensorDataset(*(t[indices] for t in dataset.tensors))


@dataclass
class Position:
    """Where training stands; all three are global, independent of the world size."""

    step: int = 0
    epoch: int = 0
    batch_in_epoch: int = 0


class Trainer:
    """One training run in one process (one rank): set up, resume, train, finish."""

    def __init__(
        self, args: argparse.Namespace, world: World, stop: StopRequest, problem: Problem
    ) -> None:
        self.args, self.world, self.stop, self.problem = args, world, stop, problem
        self.batch_size: int = args.batch_size
        self.train_set = _limit(problem.splits.train, args.max_train_samples, args.seed)
        self.validation = _limit(problem.splits.validation, args.max_eval_samples, args.seed)
        self.test = _limit(problem.splits.test, args.max_eval_samples, args.seed)
        if self.batch_size < world.world_size:
            raise UsageError(
                f"--batch-size {self.batch_size} is smaller than the world size "
                f"{world.world_size}: every worker needs at least one sample per step"
            )
        self.steps_per_epoch = len(self.train_set) // self.batch_size
        if self.steps_per_epoch == 0:
            raise UsageError(
                f"--batch-size {self.batch_size} is larger than the "
                f"{len(self.train_set)} training samples"
            )
        self.total_steps = self.steps_per_epoch * args.epochs
        self.checkpoint_dir: Path = args.checkpoint_dir or args.output_dir / "checkpoints"
        self.progress = ProgressWriter(args.progress_file if world.is_main else None)
        self.telemetry = CheckpointMetrics.from_env()
        if world.local_rank == 0:  # one endpoint per pod
            self.telemetry.serve_from_env()

        if world.device.type == "cpu":
            # On CUDA this would also need CUBLAS_WORKSPACE_CONFIG; GPU runs are reproducible
            # only up to the nondeterminism of their kernels.
            torch.use_deterministic_algorithms(True)
        self.model = problem.model.to(world.device)
        lr = args.lr if args.lr is not None else DEFAULT_LR.get(problem.name, FALLBACK_LR)
        self.optimizer = torch.optim.AdamW(
            self.model.parameters(), lr=lr, weight_decay=args.weight_decay
        )
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, warmup_cosine(self.total_steps, args.warmup_fraction)
        )
        self.position = Position()
        self.metrics: dict[str, float] = {}  # of the latest validation

    def run(self) -> int:
        resumed_from = self.resume()
        if not agree(self.world, self.position.step):
            # Ranks read the shared directory independently; if a write raced a restart they
            # could start from different steps, and DDP would silently mix the two.
            raise RuntimeError(
                f"rank {self.world.rank} resumed from step {self.position.step}, "
                "another rank from a different one; restarting"
            )
        self.record("start", resumed_from=resumed_from)
        code = self.train()
        if code == exitcodes.OK:
            self.finish()
        barrier(self.world)  # nobody leaves before rank 0 has written its files
        return code

    def resume(self) -> int | None:
        """Load the newest complete checkpoint, if any; return its step."""
        found = checkpoint.load_latest(self.checkpoint_dir)
        if found is None:
            return None
        state, step = found
        expected = {
            "task": self.problem.name,
            "batch_size": self.batch_size,
            "train_samples": len(self.train_set),
        }
        for key, value in expected.items():
            if state.get(key) != value:
                raise UsageError(
                    f"{self.checkpoint_dir} holds a run with {key} {state.get(key)!r}, this one "
                    f"has {value!r}; its data position would not carry over. Use the same "
                    "options or another --checkpoint-dir"
                )
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        set_rng_state(state["rng"])
        self.position = Position(step, state["epoch"], state["batch_in_epoch"])
        self.metrics = state["metrics"]
        log.info(
            "resumed from step %d (epoch %d, batch %d)",
            step,
            self.position.epoch,
            self.position.batch_in_epoch,
        )
        return step

    def save(self, reason: str) -> None:
        if not self.world.is_main:
            return
        started = time.monotonic()
        path = checkpoint.save_checkpoint(
            self.checkpoint_dir,
            {
                "task": self.problem.name,
                "epoch": self.position.epoch,
                "batch_in_epoch": self.position.batch_in_epoch,
                "batch_size": self.batch_size,
                "train_samples": len(self.train_set),
                "world_size": self.world.world_size,
                "model": self.model.state_dict(),
                "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(),
                "rng": rng_state(),
                "metrics": self.metrics,
            },
            self.position.step,
            self.args.keep_checkpoints,
        )
        seconds = time.monotonic() - started
        self.telemetry.written(self.position.step, seconds, time.time())
        log.info("checkpoint %s (%s) in %.3fs", path.name, reason, seconds)
        self.record("checkpoint", reason=reason, write_seconds=round(seconds, 4))

    def record(self, event: str, **fields: Any) -> None:
        step = self.position.step
        self.progress.write(
            event,
            step=step,
            epoch=self.position.epoch,
            total_steps=self.total_steps,
            percent=round(100.0 * step / self.total_steps, 2),
            world_size=self.world.world_size,
            accuracy=self.metrics.get("accuracy"),
            **fields,
        )

    def train(self) -> int:
        """Train to the last epoch (OK) or until preempted (PREEMPTED)."""
        args, position = self.args, self.position
        ddp = self._distributed_model()
        interval: Interval = args.checkpoint_interval
        saved_step, saved_time = position.step, time.monotonic()
        self.model.train()
        while position.epoch < args.epochs:
            batches = global_batches(
                len(self.train_set),
                self.batch_size,
                args.seed,
                position.epoch,
                start=position.batch_in_epoch,
            )
            for indices in batches:
                loss, stop = self._step(ddp, indices)
                if position.batch_in_epoch == self.steps_per_epoch:
                    position.epoch, position.batch_in_epoch = position.epoch + 1, 0
                    self.metrics = self._evaluate(self.validation)
                    self.record("eval", loss=loss, validation=self.metrics)
                    log.info("epoch %d: validation %s", position.epoch, self.metrics)
                if position.step % args.progress_every == 0:
                    self.record("step", loss=loss)
                if stop:
                    self.save("preempted")
                    self.record("preempted")
                    log.warning("preempted at step %d; checkpoint written", position.step)
                    return exitcodes.PREEMPTED
                if interval.due(position.step - saved_step, time.monotonic() - saved_time):
                    self.save("interval")
                    saved_step, saved_time = position.step, time.monotonic()
        if position.step != saved_step:
            self.save("final")
        return exitcodes.OK

    def _distributed_model(self) -> torch.nn.Module:
        if not self.world.distributed:
            return self.model
        cuda = self.world.device.type == "cuda"
        return DistributedDataParallel(self.model, device_ids=[self.world.device] if cuda else None)

    def _step(self, ddp: torch.nn.Module, indices: torch.Tensor) -> tuple[float, bool]:
        """One optimizer step on this rank's share of a global batch.

        Returns the mean loss over the global batch and whether any rank was asked to stop.
        """
        world, position = self.world, self.position
        seed_step(self.args.seed, position.step, world.rank)
        mine = shard(indices, world.rank, world.world_size)
        *inputs, labels = (t[mine].to(world.device) for t in self.train_set.tensors)
        self.optimizer.zero_grad(set_to_none=True)
        loss = self.problem.loss(ddp(*inputs), labels)
        # DDP averages gradients over ranks; weighting each rank's mean loss by its share of the
        # global batch turns that average into the global-batch mean, whatever the world size.
        share = len(mine) / self.batch_size
        (loss * share * world.world_size).backward()  # type: ignore[no-untyped-call]
        self.optimizer.step()
        self.scheduler.step()
        position.step += 1
        position.batch_in_epoch += 1
        # One collective for both: the summed stop flags make every rank stop after this step.
        flags = torch.tensor(
            [float(self.stop.requested), float(loss.detach()) * share],
            dtype=torch.float64,
            device=world.device,
        )
        all_reduce_sum(world, flags)
        return float(flags[1]), float(flags[0]) > 0

    def _evaluate(self, dataset: TensorDataset) -> dict[str, float]:
        return evaluate(
            self.model, dataset, len(self.problem.labels), self.world, self.problem.loss
        )

    def finish(self) -> None:
        """Score the test split and (rank 0) write ``<output-dir>/model.pt``."""
        test = self._evaluate(self.test)
        if not self.metrics:  # resumed from a checkpoint written before any evaluation
            self.metrics = self._evaluate(self.validation)
        if self.world.is_main:
            output_dir: Path = self.args.output_dir
            output_dir.mkdir(parents=True, exist_ok=True)
            checkpoint.atomic_save(
                {
                    "task": self.problem.name,
                    "labels": list(self.problem.labels),
                    "input_spec": self.problem.input_spec,
                    "model": self.model.state_dict(),
                    "metrics": {**test, "split": "test"},
                    "validation": self.metrics,
                    "step": self.position.step,
                },
                output_dir / "model.pt",
            )
        self.record("done", test_accuracy=test["accuracy"], test_macro_f1=test["macro_f1"])
        log.info("done: test %s", test)
