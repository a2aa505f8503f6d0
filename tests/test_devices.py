import pytest
import torch

from layerlottery import ConfigError
from layerlottery.devices import resolve_device


def test_auto_and_cpu():
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_device("auto").type == expected
    assert resolve_device("cpu") == torch.device("cpu") == resolve_device(torch.device("cpu"))


@pytest.mark.parametrize("name", ["gpu", "tpu:0", "cuda:x"])
def test_bad_names_name_the_setting(name):
    with pytest.raises(ConfigError, match=f"train.device must be auto, cpu, cuda or cuda:N, not '{name}'"):
        resolve_device(name, "train.device")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without CUDA")
def test_cuda_without_cuda():
    with pytest.raises(ConfigError, match="--device is cuda:1 but no CUDA device is available"):
        resolve_device("cuda:1", "--device")
