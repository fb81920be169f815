"""The fused training path's batch-norm arithmetic (`effnet.fast.bn_stats`): its Triton launches compute what
PyTorch's operators compute, within float32 rounding of float64, and train a batch norm as nn.BatchNorm2d does
(its running statistics and counter included). Under Triton's interpreter when there is no GPU."""
import pytest
import torch
from torch import nn

from effnet.fast import bn_stats
from kernel_helpers import DEVICE, needs_triton, relative_error


def _partials(counts: list[int], channels: int, seed: int):
    """Blocks of random values with these counts: each block's (sum, sum of squared deviations from its own
    mean), and the float64 mean and biased variance of all the values."""
    generator = torch.Generator().manual_seed(seed)
    blocks = [torch.randn(n, channels, generator=generator, dtype=torch.float64) * 3 + 5 for n in counts]
    sums = torch.stack([b.sum(0) for b in blocks])
    m2 = torch.stack([((b - b.mean(0)) ** 2).sum(0) for b in blocks])
    var, mean = torch.var_mean(torch.cat(blocks), dim=0, correction=0)
    device_counts = torch.tensor(counts, dtype=torch.float32, device=DEVICE)
    return sums.float().to(DEVICE), m2.float().to(DEVICE), device_counts, mean, var


@needs_triton
@pytest.mark.parametrize("blocks", [37, 1300])  # one launch; chunks of blocks first, then the chunks
def test_merge_moments_gives_the_batch_mean_and_variance(blocks):
    counts = [64] * blocks
    counts[::7] = [23] * len(counts[::7])  # ragged blocks, as the last tile of each image is
    sums, m2, device_counts, mean, var = _partials(counts, channels=70, seed=blocks)
    got_mean, got_var = bn_stats.merge_moments(sums, m2, device_counts)
    assert relative_error(got_mean.double().cpu(), mean) <= 1e-6
    assert relative_error(got_var.double().cpu(), var) <= 1e-5
    composite = bn_stats.merge_moments(sums.cpu(), m2.cpu(), device_counts.cpu()[:, None])  # PyTorch's operators
    assert relative_error(got_var.cpu(), composite[1]) <= 1e-5


@needs_triton
def test_gradient_stats_reads_any_layout_autograd_hands_over():
    torch.manual_seed(3)
    mean, y = torch.randn(40, device=DEVICE), torch.randn(2, 40, 3, 5, device=DEVICE)
    dvar = torch.randn((), device=DEVICE).expand(40)  # the gradient of a sum: stride 0
    rows = bn_stats.gradient_stats(None, dvar, mean, y)
    expected = torch.stack([torch.zeros_like(mean), 2.0 * dvar / 30, mean])
    assert torch.equal(rows, expected)


class _Reference(nn.Module):
    """What `batch_norm_train` replaces: the composite affine map and nn.BatchNorm2d's running update."""

    def __init__(self, bn: nn.BatchNorm2d) -> None:
        super().__init__()
        self.bn = bn

    def forward(self, mean, var, count):
        bn = self.bn
        scale, shift = bn_stats.batch_norm_affine(mean, var, bn.weight, bn.bias, bn.eps)
        with torch.no_grad():
            bn.num_batches_tracked.add_(1)
            bn.running_mean.lerp_(mean, bn.momentum)
            bn.running_var.lerp_(var * count / (count - 1), bn.momentum)
        return scale, shift


@needs_triton
@pytest.mark.parametrize("track", [True, False])
def test_batch_norm_train_is_a_training_batch_norm(track):
    torch.manual_seed(5)
    bn = nn.BatchNorm2d(300, track_running_stats=track).to(DEVICE)  # more channels than one program's block
    nn.init.uniform_(bn.weight, 0.5, 1.5)
    nn.init.uniform_(bn.bias, -0.5, 0.5)
    reference_bn = nn.BatchNorm2d(300, track_running_stats=track).to(DEVICE)
    reference_bn.load_state_dict(bn.state_dict())
    mean = torch.randn(300, device=DEVICE).requires_grad_()
    var = (torch.rand(300, device=DEVICE) + 0.1).requires_grad_()
    dscale, dshift = torch.randn(2, 300, device=DEVICE)
    outputs, gradients = [], []
    for module, run in ((bn, lambda m, v: bn_stats.batch_norm_train(bn, m, v, 96)),
                        (reference_bn, lambda m, v: _Reference(reference_bn)(m, v, 96) if track else
                         bn_stats.batch_norm_affine(m, v, reference_bn.weight, reference_bn.bias, reference_bn.eps))):
        scale, shift = run(mean, var)
        outputs.append((scale, shift))
        gradients.append(torch.autograd.grad((scale * dscale + shift * dshift).sum(),
                                             [mean, var, module.weight, module.bias]))
    for got, expected in zip(outputs[0], outputs[1], strict=True):
        assert relative_error(got, expected) <= 1e-6
    for got, expected in zip(gradients[0], gradients[1], strict=True):
        assert relative_error(got, expected) <= 1e-6
    for (name, got), expected in zip(bn.named_buffers(), reference_bn.buffers(), strict=True):
        assert torch.allclose(got.float(), expected.float(), rtol=1e-6, atol=1e-7), name
    if track:
        assert int(bn.num_batches_tracked) == 1
