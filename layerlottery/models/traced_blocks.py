"""A fallback for networks no block kind knows: find ``x + f(x)`` blocks by tracing them with torch.fx.

Every module of the user's own class held in an ``nn.Sequential`` is traced on its own
(``torch.fx.symbolic_trace``). It is a residual block when its result is ``x + f(x)`` (or ``relu`` of
it, as in a ResNet) for its input ``x``, and ``f(x)`` is the output of a submodule, which becomes the
branch end (the module zeroed to test removal). A block of the same class whose sum adds a transformed
input (a projection shortcut) is recognised but not removable. Each class found is registered as a
:class:`~layerlottery.models.blocks.BlockKind` named ``traced:ClassName``.

Where a candidate cannot be traced (data-dependent control flow, unsupported calls) and nothing else is
found, :class:`PruningError` says so in one line and points to ``register_block_kind``.
"""

from __future__ import annotations

import operator
import weakref
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import fx, nn

from layerlottery.errors import PruningError

_ADD_FUNCTIONS = (operator.add, operator.iadd, torch.add)
_ADD_METHODS = ("add", "add_")
_RELU_FUNCTIONS = (F.relu, torch.relu, torch.relu_)
_RELU_METHODS = ("relu", "relu_")


@dataclass(frozen=True)
class TracedResidual:
    """What tracing one module found: the submodule ending its branch, and whether the shortcut is ``x``."""

    branch_end: str
    identity_shortcut: bool


def _is_call(node: fx.Node, graph: fx.GraphModule, functions: tuple, methods: tuple, module_type: type | None) -> bool:
    if node.op == "call_function":
        return node.target in functions
    if node.op == "call_method":
        return node.target in methods
    if node.op == "call_module" and module_type is not None:
        return isinstance(graph.get_submodule(str(node.target)), module_type)
    return False


def analyse_residual(module: nn.Module) -> TracedResidual | None:
    """Trace ``module`` and read ``x + f(x)`` off its graph; ``None`` when its result has another form.

    Raises whatever ``torch.fx`` raises when the module cannot be traced.
    """
    graph = fx.symbolic_trace(module)
    nodes = list(graph.graph.nodes)
    inputs = [node for node in nodes if node.op == "placeholder"]
    outputs = [node for node in nodes if node.op == "output"]
    if not inputs or len(outputs) != 1 or not isinstance(outputs[0].args[0], fx.Node):
        return None
    x, result = inputs[0], outputs[0].args[0]
    if _is_call(result, graph, _RELU_FUNCTIONS, _RELU_METHODS, nn.ReLU):
        result = result.args[0]  # relu(x + f(x)): removal is skipping for a non-negative x, as in a ResNet
    if not isinstance(result, fx.Node) or not _is_call(result, graph, _ADD_FUNCTIONS, _ADD_METHODS, None):
        return None
    left, right = result.args[:2]
    if not (isinstance(left, fx.Node) and isinstance(right, fx.Node)):
        return None
    left, right = _through_identity(left, graph), _through_identity(right, graph)
    if x in (left, right):
        branch = right if left is x else left
        identity = True
    else:
        # A projection shortcut g(x) + f(x): recognised, not removable. The branch is the longer path.
        branch, identity = max((left, right), key=_depth), False
    if branch.op != "call_module":
        return None
    return TracedResidual(str(branch.target), identity)


def _depth(node: fx.Node) -> int:
    """Length of the longest path from the module's inputs to ``node``."""
    depths: dict[fx.Node, int] = {}
    for current in node.graph.nodes:
        depths[current] = 1 + max((depths.get(arg, 0) for arg in current.all_input_nodes), default=-1)
        if current is node:
            break
    return depths[node]


def _through_identity(node: fx.Node, graph: fx.GraphModule) -> fx.Node:
    """The node an ``nn.Identity`` passes on (``self.shortcut = nn.Identity()`` is an identity shortcut)."""
    while node.op == "call_module" and isinstance(graph.get_submodule(str(node.target)), nn.Identity):
        node = node.args[0]  # type: ignore[assignment]
    return node


_ANALYSES: "weakref.WeakKeyDictionary[nn.Module, TracedResidual | None]" = weakref.WeakKeyDictionary()


def _analysis(module: nn.Module) -> TracedResidual | None:
    if module not in _ANALYSES:
        try:
            _ANALYSES[module] = analyse_residual(module)
        except Exception:  # noqa: BLE001 - an instance that does not trace is simply not a block
            _ANALYSES[module] = None
    return _ANALYSES[module]


def _is_users_class(module: nn.Module) -> bool:
    return not type(module).__module__.startswith("torch.")


def discover_block_kinds(model: nn.Module, strict: bool = True) -> list[str]:
    """Register a block kind for each class of ``model`` whose modules compute ``x + f(x)``; their names.

    Candidates are modules of classes outside PyTorch held directly in an ``nn.Sequential``. With
    ``strict``, raises :class:`PruningError` when no class is found and some candidate could not be traced.
    """
    from layerlottery.models.blocks import BlockKind, block_kind_of, register_block_kind

    candidates: dict[type, list[nn.Module]] = {}
    for container in model.modules():
        if isinstance(container, nn.Sequential):
            for child in container.children():
                if _is_users_class(child) and block_kind_of(child) is None:
                    candidates.setdefault(type(child), []).append(child)

    found, failure = [], ""
    for cls, modules in candidates.items():
        try:
            analyses = [analyse_residual(module) for module in modules]
        except Exception as exc:  # noqa: BLE001 - torch.fx raises many types; the message is what matters
            failure = failure or f"{cls.__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__}"
            continue
        if not any(analysis is not None and analysis.identity_shortcut for analysis in analyses):
            continue
        _ANALYSES.update((module, analysis) for module, analysis in zip(modules, analyses))
        register_block_kind(
            BlockKind(
                name=f"traced:{cls.__name__}",
                matches=lambda m, cls=cls: type(m) is cls and _analysis(m) is not None,
                branch_end=lambda m: m.get_submodule(_analysis(m).branch_end),  # type: ignore[union-attr]
                has_identity_shortcut=lambda m: _analysis(m).identity_shortcut,  # type: ignore[union-attr]
            )
        )
        found.append(f"traced:{cls.__name__}")
    if strict and not found and failure:
        raise PruningError(
            f"{type(model).__name__} could not be traced ({failure}); register a BlockKind for its residual "
            "blocks (see layerlottery.models.blocks.register_block_kind)"
        )
    return found
