"""Residual blocks of a network: what they are, where they sit, what they cost, whether they can go.

A *block kind* tells how to recognise one family of residual blocks (our ``BasicBlock``, torchvision's
``BasicBlock`` and ``Bottleneck``; timm's in ``timm_blocks``, Hugging Face transformer layers in
``transformers_blocks``; others found by tracing in ``traced_blocks``), which module ends its residual
branch, and whether its shortcut is the identity. :func:`find_blocks` walks a model, runs one sample through it to record shapes and MACs, and
returns one :class:`BlockInfo` per block. Only blocks with an identity shortcut and equal input and output
shapes, held in an ``nn.Sequential``, can be deleted: removing such a block equals forcing its residual
branch to zero, because the block then computes ``relu(x)`` of an input that is already non-negative.
Transformer layers (several branches; an ``nn.ModuleList`` that the model iterates over) are the
exceptions a kind declares: see :class:`BlockKind`.
"""

from __future__ import annotations

import contextlib
import sys
from dataclasses import dataclass
from typing import Callable, Iterable, Iterator, Sequence, overload

import torch
from torch import nn

from layerlottery.errors import ConfigError, PruningError
from layerlottery.metrics.macs import (
    example_input,
    flop_counter,
    flops_per_qualified_name,
    inference_mode_of,
    resolve_input_shape,
)
from layerlottery.models.cifar_resnet import BasicBlock
from layerlottery.models.traced_blocks import discover_block_kinds


@dataclass(frozen=True)
class BlockKind:
    """How to read one family of residual blocks."""

    name: str
    matches: Callable[[nn.Module], bool]
    branch_end: Callable[[nn.Module], nn.Module]
    """The last module of the residual branch (its output is what the shortcut is added to)."""
    has_identity_shortcut: Callable[[nn.Module], bool]
    branch_ends: Callable[[nn.Module], tuple[nn.Module, ...]] | None = None
    """Every residual branch's last module, for blocks with several branches (a transformer layer adds an
    attention branch, then an MLP branch); ``None`` means the one branch that ends in ``branch_end``."""
    skip_by_zeroing: bool = True
    """Zeroing every branch makes the block return its input (up to a final ReLU of a non-negative input).
    False for post-norm blocks (BERT's ``LayerNorm(x + f(x))``): their removal is skipping, ``h' = h``."""
    in_module_list: bool = False
    """The model iterates over the ``nn.ModuleList`` holding these blocks, so one can be deleted from it
    (the list is rebuilt and renumbered, see ``layerlottery.surgery.layer_lists``)."""
    obstacle: Callable[[nn.Module], str] | None = None
    """A kind-specific reason why a block cannot be removed (``""`` when it can), e.g. a setting that ties
    the block's computation to its position."""

    def all_branch_ends(self, module: nn.Module) -> tuple[nn.Module, ...]:
        """The last module of each residual branch of ``module``."""
        return self.branch_ends(module) if self.branch_ends is not None else (self.branch_end(module),)


_BLOCK_KINDS: list[BlockKind] = []


def register_block_kind(kind: BlockKind) -> BlockKind:
    """Teach :func:`find_blocks` a new family of residual blocks."""
    _BLOCK_KINDS.append(kind)
    return kind


def block_kind_of(module: nn.Module) -> BlockKind | None:
    """The registered kind ``module`` belongs to, or ``None`` if it is not a known residual block."""
    return next((kind for kind in _BLOCK_KINDS if kind.matches(module)), None)


register_block_kind(
    BlockKind(
        name="cifar_basic",
        matches=lambda m: isinstance(m, BasicBlock),
        branch_end=lambda m: m.bn2,
        has_identity_shortcut=lambda m: isinstance(m.shortcut, nn.Identity),
    )
)


def _torchvision_block(class_name: str, module_name: str = "torchvision.models.resnet") -> Callable[[nn.Module], bool]:
    """Matcher for a torchvision block class, without importing torchvision (about a second).

    A model can only hold torchvision blocks if the torchvision module defining them is already loaded.
    """

    def matches(module: nn.Module) -> bool:
        loaded = sys.modules.get(module_name)
        return loaded is not None and isinstance(module, getattr(loaded, class_name))

    return matches


register_block_kind(
    BlockKind(
        name="torchvision_basic",
        matches=_torchvision_block("BasicBlock"),
        branch_end=lambda m: m.bn2,
        has_identity_shortcut=lambda m: m.downsample is None,
    )
)
register_block_kind(
    BlockKind(
        name="torchvision_bottleneck",
        matches=_torchvision_block("Bottleneck"),
        branch_end=lambda m: m.bn3,
        has_identity_shortcut=lambda m: m.downsample is None,
    )
)
# torchvision's ViT layer is pre-norm, x + dropout(attn(ln_1(x))) then + mlp(ln_2(x)): zeroing both branches
# returns x. The layers sit in the nn.Sequential encoder.layers, so they are deleted like ResNet blocks.
register_block_kind(
    BlockKind(
        name="torchvision_vit",
        matches=_torchvision_block("EncoderBlock", "torchvision.models.vision_transformer"),
        branch_end=lambda m: m.mlp,
        branch_ends=lambda m: (m.dropout, m.mlp),
        has_identity_shortcut=lambda m: True,
    )
)


@dataclass(frozen=True)
class BlockInfo:
    """One residual block: where it is, what it costs, and whether it can be deleted (and why not)."""

    name: str
    """Qualified module name, e.g. ``layer2.3``; stable across removal of other blocks."""
    kind: str
    stage: str
    """Name of the container holding the block, e.g. ``layer2``."""
    index: int
    """Position within the stage, counted in the network the blocks were read from."""
    input_shape: tuple[int, ...]
    output_shape: tuple[int, ...]
    stride: int
    macs: int
    params: int
    removable: bool
    reason: str = ""
    """Why the block cannot be removed; empty when it can."""


class NetworkBlocks(Sequence[BlockInfo]):
    """The residual blocks of one network, in forward order, with the network's totals."""

    def __init__(
        self, blocks: Iterable[BlockInfo], input_shape: tuple[int, ...], total_macs: int, total_params: int
    ) -> None:
        self._blocks = tuple(blocks)
        self._by_name = {block.name: block for block in self._blocks}
        self.input_shape = input_shape
        self.total_macs = total_macs
        self.total_params = total_params

    @overload
    def __getitem__(self, key: int | str) -> BlockInfo: ...
    @overload
    def __getitem__(self, key: slice) -> tuple[BlockInfo, ...]: ...
    def __getitem__(self, key):  # type: ignore[no-untyped-def]
        if isinstance(key, str):
            try:
                return self._by_name[key]
            except KeyError:
                known = ", ".join(self._by_name) or "none"
                raise PruningError(f"no residual block named {key!r}; blocks are: {known}") from None
        return self._blocks[key]

    def __len__(self) -> int:
        return len(self._blocks)

    def __iter__(self) -> Iterator[BlockInfo]:
        return iter(self._blocks)

    def __contains__(self, item: object) -> bool:
        return item in self._by_name if isinstance(item, str) else item in self._blocks

    @property
    def names(self) -> list[str]:
        return [block.name for block in self._blocks]

    @property
    def removable(self) -> list[BlockInfo]:
        """Blocks that can be deleted structurally (identity shortcut, shape kept)."""
        return [block for block in self._blocks if block.removable]

    def stages(self) -> dict[str, list[BlockInfo]]:
        """Blocks grouped by stage, in order."""
        grouped: dict[str, list[BlockInfo]] = {}
        for block in self._blocks:
            grouped.setdefault(block.stage, []).append(block)
        return grouped

    def __repr__(self) -> str:
        return f"NetworkBlocks({len(self)} blocks, {len(self.removable)} removable, {self.total_macs:,} MACs)"


def residual_modules(model: nn.Module, required: bool = False) -> list[tuple[str, nn.Module, BlockKind]]:
    """``(name, module, kind)`` for every residual block, outermost first, not descending into blocks.

    With ``required``, a network without any known residual block raises :class:`PruningError`.
    """
    found: list[tuple[str, nn.Module, BlockKind]] = []

    def visit(prefix: str, module: nn.Module) -> None:
        for child_name, child in module.named_children():
            name = f"{prefix}.{child_name}" if prefix else child_name
            kind = block_kind_of(child)
            if kind is not None:
                found.append((name, child, kind))
            else:
                visit(name, child)

    visit("", model)
    if not found and discover_block_kinds(model, strict=required):  # the torch.fx fallback for classes no kind knows
        visit("", model)
    if required and not found:
        raise PruningError(
            f"{type(model).__name__} has no residual blocks that layerlottery knows; "
            "layer pruning needs residual blocks (a ResNet), or register a BlockKind for yours"
        )
    return found


def find_blocks(model: nn.Module, input_shape: Sequence[int] | None = None) -> NetworkBlocks:
    """Every residual block of ``model`` with stage, shapes, stride, MACs, params and removability.

    ``input_shape`` is one sample's shape without the batch dimension; it defaults to the model's
    ``default_input_shape``. The model is left exactly as it was (one forward pass in eval mode).
    """
    shape = resolve_input_shape(model, input_shape)
    found = residual_modules(model, required=True)
    parents = dict(model.named_modules())
    shapes: dict[str, tuple[tuple[int, ...], tuple[int, ...]]] = {}

    def recorder(name: str) -> Callable[..., None]:
        def hook(module: nn.Module, args: tuple, kwargs: dict, output: object) -> None:
            shapes[name] = (tuple(block_input(args, kwargs).shape[1:]), tuple(first_tensor(output).shape[1:]))

        return hook

    counter = flop_counter()  # torch's counter + the CPU attention kernels
    with contextlib.ExitStack() as stack:
        for name, module, _ in found:
            stack.callback(module.register_forward_hook(recorder(name), with_kwargs=True).remove)
        stack.enter_context(inference_mode_of(model))
        stack.enter_context(counter)
        model(example_input(model, shape))
    flops = flops_per_qualified_name(counter, type(model).__name__)

    blocks = []
    positions: dict[str, int] = {}
    for name, module, kind in found:
        if name not in shapes:
            raise ConfigError(f"block {name} was not called in the forward pass; layerlottery cannot prune it")
        stage, _, _ = name.rpartition(".")
        index = positions.get(stage, 0)
        positions[stage] = index + 1
        in_shape, out_shape = shapes[name]
        stride = in_shape[-1] // out_shape[-1] if len(in_shape) == 3 and out_shape[-1] else 1
        reason = structural_obstacle(module, kind, parents.get(stage))
        if not reason and in_shape != out_shape:
            reason = f"shape changes {in_shape} -> {out_shape}"
        blocks.append(
            BlockInfo(
                name=name,
                kind=kind.name,
                stage=stage,
                index=index,
                input_shape=in_shape,
                output_shape=out_shape,
                stride=stride,
                macs=flops.get(name, 0) // 2,
                params=sum(p.numel() for p in module.parameters()),
                removable=not reason,
                reason=reason,
            )
        )
    total_params = sum(p.numel() for p in model.parameters())
    return NetworkBlocks(blocks, shape, flops.get("", 0) // 2, total_params)


def structural_obstacle(module: nn.Module, kind: BlockKind, parent: nn.Module | None) -> str:
    """Why the block's structure forbids deleting it, or ``""``.

    An identity shortcut adds the block's input to its output, so the two shapes already agree; the
    forward pass in :func:`find_blocks` checks that again for block kinds that might broadcast.
    """
    if not kind.has_identity_shortcut(module):
        return "projection/downsampling shortcut"
    if not isinstance(parent, nn.Sequential) and not (kind.in_module_list and isinstance(parent, nn.ModuleList)):
        return "not held in an nn.Sequential"
    return kind.obstacle(module) if kind.obstacle is not None else ""


def first_tensor(value: object) -> torch.Tensor:
    """The tensor a block returns: itself, or the first element of a tuple (older Hugging Face layers)."""
    while isinstance(value, (tuple, list)):
        value = value[0]
    if not isinstance(value, torch.Tensor):
        raise PruningError(f"a residual block returned {type(value).__name__}, not a tensor; layerlottery cannot read it")
    return value


def block_input(args: tuple, kwargs: dict) -> torch.Tensor:
    """The tensor a block is called with: its first positional argument, or ``hidden_states=`` / ``x=``."""
    if args:
        return first_tensor(args[0])
    for key in ("hidden_states", "x"):
        if key in kwargs:
            return first_tensor(kwargs[key])
    raise PruningError("a residual block was called without a positional input or hidden_states=; layerlottery cannot read it")


@contextlib.contextmanager
def zero_branches(model: nn.Module, names: Iterable[str]) -> Iterator[None]:
    """Force the residual branch of each named block to output zeros, for the duration of the context.

    The block then computes ``shortcut(x)`` (+ its final activation), which is what deleting it leaves.
    A block with several branches (a transformer layer) has all of them zeroed; a post-norm block (whose
    kind has ``skip_by_zeroing=False``) is refused, as zeroing its branches does not skip it.
    """
    modules = dict(model.named_modules())
    handles = []
    try:
        for name in names:
            module = modules.get(name)
            kind = block_kind_of(module) if module is not None else None
            if kind is None:
                raise PruningError(f"{name!r} is not a residual block of {type(model).__name__}")
            if not kind.skip_by_zeroing:
                raise PruningError(
                    f"block {name} ({kind.name}) normalizes after its residual additions, so zeroing its branches "
                    "does not skip it; compare with the block skipped (its output replaced by its input) instead"
                )
            for end in kind.all_branch_ends(module):
                handles.append(end.register_forward_hook(lambda _m, _a, out: torch.zeros_like(out)))
        yield
    finally:
        for handle in handles:
            handle.remove()


# Block kinds of other libraries' models; they import nothing of those libraries until a model uses them.
from layerlottery.models import timm_blocks as _timm_blocks  # noqa: E402,F401  (registers timm kinds)
from layerlottery.models import transformers_blocks as _transformers_blocks  # noqa: E402,F401  (Hugging Face kinds)
