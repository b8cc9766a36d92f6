"""Pruning: unstructured (zeros in place) and structured (smaller tensors).

Unstructured global magnitude pruning zeroes the smallest weights across every Linear and Conv
layer at once, so layers with many unimportant weights give up more. It keeps the tensors dense:
the model is exactly as large and as fast as before until a sparse kernel or a compressor uses
the zeros. Its masks stay on the model while it is fine-tuned (so the zeros stay zero) and are
made permanent afterwards.

Structured pruning removes whole units and really shrinks the tensors: conv output channels
(with the matching BatchNorm channels and the next layer's input channels), attention heads
(query/key/value rows and the output projection's columns) and FFN neurons (intermediate rows,
output columns) of a BERT encoder. Units are ranked by importance: the L1 norm of a conv filter
(Li et al., "Pruning Filters for Efficient ConvNets"), and for heads and neurons the first-order
Taylor estimate |w * dL/dw| summed over the unit's weights on a few training batches (Molchanov
et al.; Michel et al., "Are Sixteen Heads Really Better than One?").
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import torch
import torch.fx
from torch import nn
from torch.nn.utils import prune

PRUNABLE = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)

#: Modules and functions a conv's channels pass through unchanged, one channel to one channel.
_CHANNELWISE_MODULES = (
    nn.BatchNorm2d,
    nn.ReLU,
    nn.ReLU6,
    nn.LeakyReLU,
    nn.GELU,
    nn.SiLU,
    nn.MaxPool2d,
    nn.AvgPool2d,
    nn.AdaptiveAvgPool2d,
    nn.Dropout,
    nn.Dropout2d,
    nn.Identity,
)
_CHANNELWISE_FUNCTIONS: frozenset[object] = frozenset(
    {
        torch.relu,
        nn.functional.relu,
        nn.functional.gelu,
        nn.functional.max_pool2d,
        nn.functional.avg_pool2d,
        nn.functional.adaptive_avg_pool2d,
        nn.functional.dropout,
    }
)


class PruningError(ValueError):
    """The model has nothing this kind of pruning can remove."""


# --- unstructured --------------------------------------------------------------------------


def prunable_weights(model: nn.Module) -> list[tuple[nn.Module, str]]:
    """The weight of every Linear and Conv layer, as torch.nn.utils.prune names them."""
    return [(module, "weight") for module in model.modules() if isinstance(module, PRUNABLE)]


def global_magnitude_prune(model: nn.Module, sparsity: float) -> list[tuple[nn.Module, str]]:
    """Zero the `sparsity` fraction of smallest-magnitude weights across all Linear/Conv layers.

    The masks stay attached (weight = weight_orig * weight_mask) so a fine-tune cannot revive
    pruned weights; call `make_permanent` with the returned list afterwards."""
    params = prunable_weights(model)
    if not params:
        raise PruningError("the model has no Linear or Conv layer to prune")
    prune.global_unstructured(params, pruning_method=prune.L1Unstructured, amount=sparsity)
    return params


def make_permanent(params: Iterable[tuple[nn.Module, str]]) -> None:
    """Fold the pruning masks into the weights and drop the reparametrization."""
    for module, name in params:
        prune.remove(module, name)  # type: ignore[no-untyped-call]


# --- tensor surgery ----------------------------------------------------------------------------


def _keep_indices(scores: torch.Tensor, fraction: float) -> torch.Tensor:
    """Indices (sorted) of the units to keep: drop round(fraction * n), but keep at least one."""
    n = scores.numel()
    drop = min(round(fraction * n), n - 1)
    keep = torch.topk(scores, n - drop).indices
    return keep.sort().values


def _select_linear(layer: nn.Linear, index: torch.Tensor, dim: int) -> nn.Linear:
    """A new Linear with only the output rows (dim 0) or input columns (dim 1) in `index`."""
    weight = layer.weight.detach().index_select(dim, index).clone()
    has_bias = layer.bias is not None
    new = nn.Linear(weight.shape[1], weight.shape[0], bias=has_bias)
    with torch.no_grad():
        new.weight.copy_(weight)
        if layer.bias is not None:
            bias = layer.bias.detach()
            new.bias.copy_(bias[index] if dim == 0 else bias)
    return new


def _select_conv_out(conv: nn.Conv2d, index: torch.Tensor) -> None:
    with torch.no_grad():
        conv.weight = nn.Parameter(conv.weight.detach()[index].clone())
        if conv.bias is not None:
            conv.bias = nn.Parameter(conv.bias.detach()[index].clone())
    conv.out_channels = int(index.numel())


def _select_conv_in(conv: nn.Conv2d, index: torch.Tensor) -> None:
    with torch.no_grad():
        conv.weight = nn.Parameter(conv.weight.detach()[:, index].clone())
    conv.in_channels = int(index.numel())


def _select_batchnorm(norm: nn.BatchNorm2d, index: torch.Tensor) -> None:
    with torch.no_grad():
        if norm.weight is not None:
            norm.weight = nn.Parameter(norm.weight.detach()[index].clone())
        if norm.bias is not None:
            norm.bias = nn.Parameter(norm.bias.detach()[index].clone())
        if norm.running_mean is not None:
            norm.running_mean = norm.running_mean[index].clone()
        if norm.running_var is not None:
            norm.running_var = norm.running_var[index].clone()
    norm.num_features = int(index.numel())


# --- conv channels -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _ChannelChain:
    """A conv whose output channels reach exactly one consumer through channel-wise ops."""

    conv: str
    norms: tuple[str, ...]
    #: The next conv (input channels), or a Linear after a flatten (blocks of input columns).
    consumer: str
    flattened: bool


def _is_flatten(node: torch.fx.Node, modules: dict[str, nn.Module]) -> bool:
    if node.op == "call_module":
        return isinstance(modules[str(node.target)], nn.Flatten)
    if node.op == "call_function":
        return node.target is torch.flatten
    return node.op == "call_method" and node.target in ("flatten", "view", "reshape")


def _channel_chains(model: nn.Module) -> list[_ChannelChain]:
    graph = torch.fx.symbolic_trace(model).graph
    modules = dict(model.named_modules())
    chains: list[_ChannelChain] = []
    for node in graph.nodes:
        if node.op != "call_module" or not isinstance(modules[str(node.target)], nn.Conv2d):
            continue
        conv = modules[str(node.target)]
        assert isinstance(conv, nn.Conv2d)
        if conv.groups != 1:
            continue
        norms: list[str] = []
        flattened = False
        current = node
        while len(current.users) == 1:
            (user,) = current.users
            target = str(user.target)
            if user.op == "call_module" and isinstance(modules[target], nn.Conv2d | nn.Linear):
                layer = modules[target]
                usable = (isinstance(layer, nn.Conv2d) and layer.groups == 1 and not flattened) or (
                    isinstance(layer, nn.Linear) and flattened
                )
                if usable:
                    chains.append(_ChannelChain(str(node.target), tuple(norms), target, flattened))
                break
            if user.op == "call_module" and isinstance(modules[target], _CHANNELWISE_MODULES):
                if isinstance(modules[target], nn.BatchNorm2d):
                    norms.append(target)
            elif user.op == "call_function" and user.target in _CHANNELWISE_FUNCTIONS:
                pass
            elif not flattened and _is_flatten(user, modules):
                flattened = True
            else:
                break
            current = user
    return chains


def prune_conv_channels(model: nn.Module, fraction: float) -> dict[str, tuple[int, int]]:
    """Remove the `fraction` of each prunable conv's output channels with the smallest filter L1
    norm. Returns {conv name: (channels before, after)}; a conv whose output reaches anything
    but a channel-wise op and the next conv (or a flatten and a Linear) is left alone."""
    chains = _channel_chains(model)
    if not chains:
        raise PruningError("no conv layer whose output channels can be removed")
    changed: dict[str, tuple[int, int]] = {}
    for chain in chains:
        conv = model.get_submodule(chain.conv)
        assert isinstance(conv, nn.Conv2d)
        before = conv.out_channels
        keep = _keep_indices(conv.weight.detach().abs().sum(dim=(1, 2, 3)), fraction)
        consumer = model.get_submodule(chain.consumer)
        if isinstance(consumer, nn.Linear):
            # Flattening [C, H, W] puts channel c at columns c*H*W ... (c+1)*H*W - 1.
            per_channel = consumer.in_features // before
            columns = (keep[:, None] * per_channel + torch.arange(per_channel)).reshape(-1)
            parent_name, _, attr = chain.consumer.rpartition(".")
            parent = model.get_submodule(parent_name)
            setattr(parent, attr, _select_linear(consumer, columns, dim=1))
        else:
            assert isinstance(consumer, nn.Conv2d)
            _select_conv_in(consumer, keep)
        _select_conv_out(conv, keep)
        for name in chain.norms:
            norm = model.get_submodule(name)
            assert isinstance(norm, nn.BatchNorm2d)
            _select_batchnorm(norm, keep)
        changed[chain.conv] = (before, conv.out_channels)
    return changed


# --- BERT heads and FFN neurons --------------------------------------------------------------


def encoder_layers(model: nn.Module) -> nn.ModuleList | None:
    """The BertLayer list of a task model built as `model.encoder` = HF BertModel, else None."""
    encoder = getattr(model, "encoder", None)
    inner = getattr(encoder, "encoder", None)
    layers = getattr(inner, "layer", None)
    return layers if isinstance(layers, nn.ModuleList) else None


LossFn = Callable[[nn.Module, Sequence[torch.Tensor]], torch.Tensor]


def taylor_scores(
    model: nn.Module, batches: Iterable[Sequence[torch.Tensor]], loss_fn: LossFn
) -> dict[str, torch.Tensor]:
    """|w * dL/dw| accumulated over `batches`, for every parameter by name."""
    model.train()
    model.zero_grad()
    for batch in batches:
        loss_fn(model, batch).backward()  # type: ignore[no-untyped-call]
    scores = {
        name: (param.detach() * param.grad).abs()
        for name, param in model.named_parameters()
        if param.grad is not None
    }
    model.zero_grad()
    model.eval()
    return scores


def _score(scores: dict[str, torch.Tensor], name: str, layer: nn.Linear) -> torch.Tensor:
    weight = scores.get(f"{name}.weight")
    # No gradient reached it (e.g. a frozen layer): fall back to the weights' magnitude.
    return weight if weight is not None else layer.weight.detach().abs()


def _linear(root: nn.Module, path: str) -> nn.Linear:
    layer = root.get_submodule(path)
    if not isinstance(layer, nn.Linear):
        raise PruningError(f"expected a Linear layer at {path}, found {type(layer).__name__}")
    return layer


def _replace(root: nn.Module, path: str, new: nn.Module) -> None:
    parent, _, attribute = path.rpartition(".")
    setattr(root.get_submodule(parent), attribute, new)


def prune_heads_and_neurons(
    model: nn.Module,
    head_fraction: float,
    neuron_fraction: float,
    scores: dict[str, torch.Tensor],
) -> list[dict[str, int]]:
    """Remove the least important attention heads and FFN neurons of every BertLayer.

    Returns per layer {"heads_before", "heads_after", "neurons_before", "neurons_after"}."""
    layers = encoder_layers(model)
    if layers is None:
        raise PruningError("the model has no BERT encoder (model.encoder.encoder.layer)")
    prefix = next(name for name, module in model.named_modules() if module is layers)
    summary: list[dict[str, int]] = []
    for position, layer in enumerate(layers):
        name = f"{prefix}.{position}"
        # HF names inside a BertLayer; get_submodule fails clearly if they ever change.
        qkv = ("attention.self.query", "attention.self.key", "attention.self.value")
        attention = layer.get_submodule("attention.self")
        head_size = int(getattr(attention, "attention_head_size", 0))
        if head_size <= 0:
            raise PruningError(f"{name}.attention.self has no attention_head_size")
        heads = _linear(layer, qkv[0]).out_features // head_size
        # Importance of a head: its rows in Q, K, V and its columns in the output projection.
        rows = torch.stack(
            [_score(scores, f"{name}.{path}", _linear(layer, path)).sum(dim=1) for path in qkv]
        ).sum(dim=0)
        out_path = "attention.output.dense"
        columns = _score(scores, f"{name}.{out_path}", _linear(layer, out_path)).sum(dim=0)
        head_scores = (rows + columns).reshape(heads, head_size).sum(dim=1)
        keep_heads = _keep_indices(head_scores, head_fraction)
        index = (keep_heads[:, None] * head_size + torch.arange(head_size)).reshape(-1)
        for path in qkv:
            _replace(layer, path, _select_linear(_linear(layer, path), index, dim=0))
        _replace(layer, out_path, _select_linear(_linear(layer, out_path), index, dim=1))
        # Plain int attributes of HF's BertSelfAttention (nn.Module types them as submodules).
        attention.num_attention_heads = int(keep_heads.numel())  # type: ignore[assignment]
        attention.all_head_size = int(index.numel())  # type: ignore[assignment]

        up_path, down_path = "intermediate.dense", "output.dense"
        up, down = _linear(layer, up_path), _linear(layer, down_path)
        neuron_scores = _score(scores, f"{name}.{up_path}", up).sum(dim=1) + _score(
            scores, f"{name}.{down_path}", down
        ).sum(dim=0)
        keep_neurons = _keep_indices(neuron_scores, neuron_fraction)
        _replace(layer, up_path, _select_linear(up, keep_neurons, dim=0))
        _replace(layer, down_path, _select_linear(down, keep_neurons, dim=1))
        summary.append(
            {
                "heads_before": heads,
                "heads_after": int(keep_heads.numel()),
                "neurons_before": up.out_features,
                "neurons_after": int(keep_neurons.numel()),
            }
        )
    return summary
