"""`effnet.devices.resolve_device`: the one check behind every --device option (predict, eval, train, bench, scale)."""
import pytest
import torch

from effnet.devices import resolve_device
from effnet.errors import DeviceError


def test_names_resolve_to_devices_and_other_names_are_one_clear_error():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto") == torch.device("cuda" if torch.cuda.is_available() else "cpu")
    assert resolve_device(torch.device("meta")) == torch.device("meta")  # another accelerator's device, as given
    for name in ("tpu", "cpu:0", "cudax", "cuda:-1", ""):
        with pytest.raises(DeviceError, match=f"device must be auto, cpu, cuda or cuda:N, got {name!r}"):
            resolve_device(name)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks a machine without a GPU")
def test_cuda_without_a_gpu_is_refused_before_anything_is_built():
    for name in ("cuda", "cuda:1", torch.device("cuda", 0)):
        with pytest.raises(DeviceError, match="no CUDA device is available here; use cpu"):
            resolve_device(name, local_rank=0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_cuda_takes_the_local_rank_and_refuses_an_index_past_the_last_gpu():
    count = torch.cuda.device_count()
    assert resolve_device("cuda", local_rank=count - 1) == torch.device("cuda", count - 1)
    assert resolve_device("cuda") == torch.device("cuda")
    with pytest.raises(DeviceError, match=f"there is no cuda:{count} here"):
        resolve_device(f"cuda:{count}")


def test_torchrun_processes_take_their_local_rank_not_one_named_gpu():
    """Under torchrun (world size > 1) a named GPU would put every process on it; a plain device is each
    process's own."""
    from effnet.train.distributed import pick_device

    with pytest.raises(DeviceError, match="with torchrun each process trains on the GPU of its local rank"):
        pick_device("cuda:1", local_rank=0, world_size=2)
    assert pick_device("cpu", local_rank=1, world_size=2) == torch.device("cpu")
    if torch.cuda.is_available():
        assert pick_device("cuda", local_rank=0, world_size=2) == torch.device("cuda", 0)
