"""`benchmarks/saved_activations.py` counts the activation bytes a training forward keeps for the backward:
each storage once, parameters and their autocast copies left out, so the memory savers and the fused
training blocks show what they save without a GPU."""
import copy
import sys
from pathlib import Path

import torch
from torch import nn

from effnet.fast.fused_training import use_fused_training
from effnet.fast.memory import enable_memory_saving
from kernel_helpers import DEVICE, needs_triton, tiny

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from saved_activations import saved_activation_bytes  # noqa: E402


def test_counts_the_activations_once_and_no_parameters():
    """Linear -> ReLU -> Linear keeps its input, the hidden ReLU output (for ReLU's and the second
    layer's backward: one storage, counted once) and nothing of its weights or their autocast copies."""
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4))
    x = torch.randn(5, 8)
    assert saved_activation_bytes(model, x, None) == 5 * (8 + 16) * 4
    assert saved_activation_bytes(model, x, torch.bfloat16) == 5 * (8 + 16) * 2  # the bf16 casts autocast keeps


@needs_triton
def test_the_fast_training_paths_keep_less_than_the_plain_model():
    plain = tiny().to(DEVICE)
    x = torch.randn(2, 3, 32, 32, device=DEVICE).contiguous(memory_format=torch.channels_last)
    kept = {name: saved_activation_bytes(build(copy.deepcopy(plain)), x, None)
            for name, build in (("plain", lambda m: m), ("ftrain", use_fused_training),
                                ("stages", lambda m: enable_memory_saving(m, "stages")),
                                ("activations", lambda m: enable_memory_saving(m, "activations")))}
    assert kept["ftrain"] < 0.7 * kept["plain"] and kept["stages"] < 0.3 * kept["plain"], kept
    assert kept["activations"] < 0.8 * kept["plain"], kept  # its Triton passes (channels-last) keep only the input
