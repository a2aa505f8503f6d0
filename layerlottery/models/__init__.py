"""Models: the CIFAR ResNets of the paper, tiny test models, and the registry that builds them."""

from layerlottery.models import cifar_resnet as _cifar_resnet  # noqa: F401  (registers the models)
from layerlottery.models import external as _external  # noqa: F401  (registers the torchvision: and timm: sources)
from layerlottery.models import hf_causal_lm as _hf_causal_lm  # noqa: F401  (registers the hf: source)
from layerlottery.models.cifar_resnet import BasicBlock, CifarResNet
from layerlottery.models.registry import create_model, list_models, register_model

__all__ = ["BasicBlock", "CifarResNet", "create_model", "list_models", "register_model"]
