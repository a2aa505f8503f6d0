"""Image datasets for pruning experiments: one in-memory type and loaders behind a name registry."""

from layerlottery.data.cifar import load_cifar10, load_cifar100
from layerlottery.data.cifar10c import CIFAR10C_CORRUPTIONS, load_cifar10c
from layerlottery.data.cifar102 import load_cifar102
from layerlottery.data.dataset import ImageDataset, channel_stats
from layerlottery.data.digits import load_digits_dataset
from layerlottery.data.mnist import load_mnist, read_idx
from layerlottery.data.paths import DATA_ENV_VAR, default_data_root
from layerlottery.data.registry import get_dataset, list_datasets, register_dataset
from layerlottery.data.splits import stratified_split
from layerlottery.data.synthetic import load_synthetic
from layerlottery.data.augment import random_crop_flip
from layerlottery.data.loader import DeviceLoader
from layerlottery.data.folder import FolderLoader

__all__ = [
    "CIFAR10C_CORRUPTIONS",
    "DATA_ENV_VAR",
    "ImageDataset",
    "channel_stats",
    "default_data_root",
    "get_dataset",
    "list_datasets",
    "load_cifar10",
    "load_cifar100",
    "load_cifar102",
    "load_cifar10c",
    "load_digits_dataset",
    "load_mnist",
    "load_synthetic",
    "read_idx",
    "register_dataset",
    "stratified_split",
    "random_crop_flip",
    "DeviceLoader",
    "FolderLoader",
]
