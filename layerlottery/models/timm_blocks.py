"""timm's residual blocks: vision transformer ``Block`` and ResNet ``BasicBlock``/``Bottleneck``.

Both sit in an ``nn.Sequential`` (``blocks`` of a ``VisionTransformer``, ``layer1..4`` of a ``ResNet``), so
they are deleted the way torchvision's are and kept blocks keep their names. A ViT ``Block`` is pre-norm,
``x + ls1(attn(norm1(x)))`` then ``+ ls2(mlp(norm2(x)))``: zeroing both branches returns ``x``. A ResNet
block ends in ``act(x + branch(x))``; with a ReLU and a non-negative input (the previous block's output)
zeroing the branch returns ``x``, so a block whose final activation is not a ReLU is not removable.

Nothing here imports timm: the matchers look the classes up in ``sys.modules``.
"""

from __future__ import annotations

from torch import nn

from layerlottery.models.blocks import BlockKind, register_block_kind
from layerlottery.models.transformers_blocks import loaded_class_matcher

register_block_kind(
    BlockKind(
        name="timm_vit",
        matches=loaded_class_matcher("timm.models.vision_transformer", "Block"),
        branch_end=lambda m: m.ls2,
        branch_ends=lambda m: (m.ls1, m.ls2),
        has_identity_shortcut=lambda m: True,
    )
)


def _resnet_branch_end(block: nn.Module, last_bn: str) -> nn.Module:
    """The module whose output is added to the shortcut: drop path, else squeeze-excitation, else the last BN."""
    for name in ("drop_path", "se", last_bn):
        module = getattr(block, name, None)
        if module is not None:
            return module
    raise AssertionError(f"timm block without {last_bn}")  # timm's blocks always have it


def _final_relu_obstacle(activation: str):
    def obstacle(block: nn.Module) -> str:
        final = getattr(block, activation)
        if not isinstance(final, nn.ReLU):
            return f"final activation is {type(final).__name__}, not ReLU, so deleting the block is not skipping it"
        return ""

    return obstacle


register_block_kind(
    BlockKind(
        name="timm_basic",
        matches=loaded_class_matcher("timm.models.resnet", "BasicBlock"),
        branch_end=lambda m: _resnet_branch_end(m, "bn2"),
        has_identity_shortcut=lambda m: m.downsample is None,
        obstacle=_final_relu_obstacle("act2"),
    )
)
register_block_kind(
    BlockKind(
        name="timm_bottleneck",
        matches=loaded_class_matcher("timm.models.resnet", "Bottleneck"),
        branch_end=lambda m: _resnet_branch_end(m, "bn3"),
        has_identity_shortcut=lambda m: m.downsample is None,
        obstacle=_final_relu_obstacle("act3"),
    )
)
