"""int8 post-training quantization on CPU, dynamic and static (eager mode, torch.ao).

Dynamic quantization stores Linear weights in int8 and quantizes activations on the fly; it
needs no data and suits transformers, whose time goes into Linear layers. Static quantization
also fixes the activations' scales from calibration batches, so whole conv stacks run in int8;
eager mode needs a model built from modules that have quantized kernels (Conv, Linear, ReLU,
pooling, BatchNorm folded into the conv), which a small CNN is and a BERT encoder (LayerNorm,
GELU, softmax, embeddings) is not: for those `static_int8` raises `StaticUnsupported` with why.

torch 2.13 marks torch.ao.quantization as deprecated in favour of torchao; torchao's int8 path
ran slower than fp32 in eager mode on CPU when we measured it (docs/architecture.md, "Why
int8 stays on torch.ao"), so the eager API stays, and its deprecation notices are captured
and returned for the report instead of being printed into a pod's log on every run.
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Iterable, Sequence

import torch
import torch.ao.quantization as tq
from torch import nn


class StaticUnsupported(ValueError):
    """Static eager-mode quantization cannot handle this model; the message says why."""


#: Leaf modules that have eager-mode quantized kernels (or fold into one).
_STATIC_OK = (
    nn.Conv2d,
    nn.Linear,
    nn.ReLU,
    nn.BatchNorm2d,
    nn.MaxPool2d,
    nn.AvgPool2d,
    nn.AdaptiveAvgPool2d,
    nn.Dropout,
    nn.Dropout2d,
    nn.Flatten,
    nn.Identity,
)


def cpu_engine() -> str:
    """The quantized engine for this CPU: x86 (fbgemm + onednn) where built in, else qnnpack."""
    engines = torch.backends.quantized.supported_engines
    for engine in ("x86", "fbgemm", "qnnpack"):
        if engine in engines:
            return engine
    raise RuntimeError(f"this torch build has no int8 CPU engine (has {engines})")


def _messages(caught: Iterable[warnings.WarningMessage]) -> list[str]:
    # One line each, whitespace collapsed: torch's messages are indented multi-line strings.
    return sorted({f"{w.category.__name__}: {' '.join(str(w.message).split())}" for w in caught})


def dynamic_int8(model: nn.Module) -> tuple[nn.Module, list[str]]:
    """A copy of `model` with int8 Linear weights; and the warnings torch printed."""
    torch.backends.quantized.engine = cpu_engine()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        quantized: nn.Module = tq.quantize_dynamic(  # type: ignore[no-untyped-call]
            copy.deepcopy(model).eval(), {nn.Linear}, dtype=torch.qint8
        )
    return quantized, _messages(caught)


def _fusable_groups(model: nn.Module) -> list[list[str]]:
    """Conv[-BN][-ReLU] and Linear-ReLU runs inside nn.Sequential containers.

    Only Sequential children run in the order they are registered; a module that is called
    elsewhere (a shared ReLU in a custom forward) must not be fused away."""
    groups: list[list[str]] = []
    for prefix, parent in model.named_modules():
        if not isinstance(parent, nn.Sequential):
            continue
        children = list(parent.named_children())
        i = 0
        while i < len(children):
            name, child = children[i]
            run = [name]
            kinds: tuple[type[nn.Module], ...] = ()
            if isinstance(child, nn.Conv2d):
                kinds = (nn.BatchNorm2d, nn.ReLU)
            elif isinstance(child, nn.Linear):
                kinds = (nn.ReLU,)
            for kind in kinds:
                if i + len(run) < len(children) and isinstance(children[i + len(run)][1], kind):
                    run.append(children[i + len(run)][0])
            if len(run) > 1:
                groups.append([f"{prefix}.{n}" if prefix else n for n in run])
            i += len(run)
    return groups


def check_static(model: nn.Module, input_count: int) -> None:
    """Raise StaticUnsupported when eager static quantization cannot work on this model."""
    unsupported = sorted(
        {
            type(module).__name__
            for module in model.modules()
            if not list(module.children()) and not isinstance(module, _STATIC_OK)
        }
    )
    if unsupported:
        raise StaticUnsupported(
            "eager-mode static int8 has no kernels for " + ", ".join(unsupported)
        )
    if input_count != 1:
        raise StaticUnsupported(
            f"the model takes {input_count} inputs; eager static quantization wraps one"
        )


def static_int8(
    model: nn.Module, calibration: Iterable[Sequence[torch.Tensor]]
) -> tuple[nn.Module, list[str]]:
    """A copy of `model` with int8 weights and activations, calibrated on `calibration` batches
    (each: the model's single input, then anything else, e.g. the label)."""
    check_static(model, 1)
    engine = cpu_engine()
    torch.backends.quantized.engine = engine
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        body = copy.deepcopy(model).eval()
        groups = _fusable_groups(body)
        if groups:
            body = tq.fuse_modules(body, groups)  # type: ignore[no-untyped-call]
        wrapped = nn.Sequential(tq.QuantStub(), body, tq.DeQuantStub())
        qconfig = tq.get_default_qconfig(engine)  # type: ignore[no-untyped-call]
        wrapped.qconfig = qconfig
        prepared: nn.Module = tq.prepare(wrapped)  # type: ignore[no-untyped-call]
        first: torch.Tensor | None = None
        with torch.inference_mode():
            for batch in calibration:
                first = batch[0] if first is None else first
                prepared(batch[0])
        if first is None:
            raise StaticUnsupported("no calibration batches")
        quantized: nn.Module = tq.convert(prepared)  # type: ignore[no-untyped-call]
        # Calibration runs in float; an op without an int8 kernel only fails now.
        try:
            with torch.inference_mode():
                quantized(first)
        except (RuntimeError, NotImplementedError) as error:
            reason = str(error).strip().splitlines()[0]
            raise StaticUnsupported(f"the int8 model does not run: {reason}") from None
    return quantized, _messages(caught)
