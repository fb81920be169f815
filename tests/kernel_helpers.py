"""What the fast-path tests share: where the Triton kernels run, how far two outputs are apart, and
small models whose logits really depend on their input."""
import pytest
import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

import effnet
from effnet.bench.measure import relative_error  # the tests' yardstick is the benchmarks' own
from effnet.fast import kernels
from effnet.models import get_entry
from effnet.models.blocks import MBConv
from effnet.scaling import scale_by_multipliers

__all__ = ["DEPTHWISE_FORM_FUNCTIONS", "DEPTHWISE_PASSES", "DEVICE", "OpNames", "depthwise_training_case",
           "graph_recorder", "needs_triton", "outputs_and_gradients", "randomise_batchnorm", "relative_error",
           "small_depthwise_tiles", "spy_calls", "tiny", "tuned_and_plain"]

needs_triton = pytest.mark.skipif(
    not (kernels.triton is not None and (torch.cuda.is_available() or kernels.INTERPRET)),
    reason="Triton is not installed, or no GPU and TRITON_INTERPRET is not 1")
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


def graph_recorder():
    """(backend, graphs): a `torch.compile` backend that runs AOT autograd's forward and backward graphs as
    they are and keeps each one's code in `graphs["forward"]` / `graphs["backward"]`, for tests that look
    for the custom operators in them."""
    from functorch.compile import make_boxed_func
    from torch._dynamo.backends.common import aot_autograd

    graphs = {}

    def recorder(kind):
        def compile_graph(graph_module, example_inputs):
            graphs[kind] = graph_module.code
            return make_boxed_func(graph_module.forward)
        return compile_graph

    return aot_autograd(fw_compiler=recorder("forward"), bw_compiler=recorder("backward")), graphs


def outputs_and_gradients(function, tensors, seed: int, **options) -> list[torch.Tensor]:
    """(y, mean, var) of a fused training pass (`bn_pointwise`, `bn_depthwise` or their references) on copies
    of `tensors` (None where absent), then every present tensor's gradient for a loss weighing y, its batch
    mean and its variance with random weights drawn from `seed`."""
    leaves = [t.detach().clone().requires_grad_() if t is not None else None for t in tensors]
    y, mean, var = function(*leaves, **options)
    generator = torch.Generator(device=DEVICE).manual_seed(seed)
    weights = [torch.randn(t.shape, device=DEVICE, generator=generator) for t in (y, mean, var)]
    loss = (y.float() * weights[0]).sum() + (mean * weights[1]).sum() + (var * weights[2]).sum()
    return [y, mean, var, *torch.autograd.grad(loss, [t for t in leaves if t is not None])]


def depthwise_training_case(affine: bool, kernel_size: int, stride: int, same: bool, seed: int,
                            shape: tuple[int, ...] = (2, 20, 7, 9)) -> tuple[tuple, dict]:
    """((x, weight, scale, shift), options) for `bn_depthwise` and its reference: a channels-last x, a depthwise
    weight, the input's batch norm as an affine map (None without `affine`) and the conv's geometry."""
    from effnet.fast import ops

    torch.manual_seed(seed)
    channels = shape[1]
    x = torch.randn(shape, device=DEVICE).contiguous(memory_format=torch.channels_last)
    weight = torch.randn(channels, 1, kernel_size, kernel_size, device=DEVICE) / kernel_size
    scale = torch.rand(channels, device=DEVICE) + 0.5 if affine else None
    shift = torch.randn(channels, device=DEVICE) * 0.3 if affine else None
    output_size, padding = ops.conv_geometry(x, kernel_size, stride, same)
    return (x, weight, scale, shift), dict(stride=stride, padding=padding, output_size=output_size, act=affine)


# The training 1x1 conv's passes (tuning ops) a library-form test puts on `blas`, and each pass's function in the
# form's module (`bn_pointwise_blas`, `projection_blas`).
POINTWISE_PASSES = {"forward": ("bn_pointwise",), "input": ("bn_pointwise_input_grad",),
                    "weight": ("bn_pointwise_weight_grad",),
                    "all": ("bn_pointwise", "bn_pointwise_input_grad", "bn_pointwise_weight_grad")}
POINTWISE_FUNCTIONS = {"bn_pointwise": "forward", "bn_pointwise_input_grad": "input_grad",
                       "bn_pointwise_weight_grad": "weight_grad"}


def use_pointwise_library(tmp_path, ops_named, x, out_channels: int, normalized: bool) -> None:
    """Write a tuning file naming the library form (`blas`) for the passes `ops_named` of the 1x1 layer of input x
    and `out_channels` outputs, and use it."""
    from effnet.fast import tuning

    path = tmp_path / "tuning.json"
    key = dict(in_channels=x.shape[1], out_channels=out_channels, height=x.shape[2], width=x.shape[3],
               normalized=normalized)
    for op in ops_named:
        tuning.record(path, op, key, "blas", [], device="test", seconds=1, default_seconds=2)
    tuning.use(path)


# The fused training depthwise conv's passes (tuning ops) a form test puts on another kernel, by which, and each
# pass's function in a form's module (`bn_depthwise_cudnn`, `bn_depthwise_banded`).
DEPTHWISE_PASSES = {"forward": ("bn_depthwise",), "weight": ("bn_depthwise_weight_grad",),
                    "input": ("bn_depthwise_input_grad",),
                    "all": ("bn_depthwise", "bn_depthwise_weight_grad", "bn_depthwise_input_grad")}
DEPTHWISE_FORM_FUNCTIONS = {"bn_depthwise": "forward", "bn_depthwise_weight_grad": "weight_grad",
                            "bn_depthwise_input_grad": "input_grad"}


@pytest.fixture
def small_depthwise_tiles(monkeypatch):
    """`bn_depthwise`'s Triton passes on small tiles under the interpreter, and no tuning file left behind."""
    from effnet.fast import bn_depthwise, tuning

    monkeypatch.setattr(bn_depthwise, "_INTERPRET_TILES", (4, 8, 16, 4))
    monkeypatch.setattr(bn_depthwise, "_INTERPRET_WEIGHT_TILES", (4, 2, 4, 16, 4))
    yield
    tuning.use(None)


class OpNames(TorchDispatchMode):
    """The names of the PyTorch operators called while active, as `aten` names them without the overload
    (`silu`, `clone`, ...); a custom operator's insides not included."""

    def __init__(self):
        super().__init__()
        self.names: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.names.append(func.__name__.split(".")[0])
        return func(*args, **(kwargs or {}))


def spy_calls(monkeypatch, module, names) -> list[str]:
    """The names of `module`'s functions `names` as they are called, in order (still the real functions)."""
    calls = []
    for name in names:
        real = getattr(module, name)
        monkeypatch.setattr(module, name, lambda *args, name=name, real=real, **kwargs: calls.append(name)
                            or real(*args, **kwargs))
    return calls


def spy_kwargs(monkeypatch, module, name: str) -> list:
    """The keyword arguments of each call of `module.name`, in order (still the real function)."""
    calls, real = [], getattr(module, name)

    def counted(*args, **kwargs):
        calls.append(kwargs)
        return real(*args, **kwargs)

    monkeypatch.setattr(module, name, counted)
    return calls


def layer_keys(model, x):
    """(depthwise keys, pointwise keys) of the model's MBConv layers: the calls the fused model makes to `ops`."""
    depthwise, pointwise = [], []

    def recorder(keys, **flags):
        def record(conv, inputs):
            _, channels, height, width = inputs[0].shape
            if conv.groups > 1:
                keys.append(dict(kernel_size=conv.kernel_size[0], stride=conv.stride[0], channels=channels,
                                 height=height, width=width))
            else:
                keys.append(dict(in_channels=channels, out_channels=conv.out_channels, height=height, width=width,
                                 **flags))
        return record

    hooks = []
    for block in model.modules():
        if isinstance(block, MBConv):
            hooks.append(block.conv_dw.register_forward_pre_hook(recorder(depthwise)))
            if block.expands:
                hooks.append(block.conv_pw.register_forward_pre_hook(recorder(pointwise, gated=False, residual=False)))
            hooks.append(block.conv_pwl.register_forward_pre_hook(
                recorder(pointwise, gated=block.has_se, residual=block.has_skip)))
    with torch.inference_mode():
        model(x)
    for hook in hooks:
        hook.remove()
    return depthwise, pointwise


def randomise_batchnorm(model: nn.Module) -> nn.Module:
    """BN affine terms away from identity and statistics of a random batch, so folding is really
    exercised and the logits depend on the input.

    With arbitrary statistics (mean +-0.5, variance 0.5-2) the input's signal fades through the
    blocks: the tiny model's logits for two random inputs then differ by ~5e-6 relatively, so a
    broken kernel would pass the 1e-5 bound the fast paths are held to.
    """
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.momentum = 1.0  # the running statistics become the next batch's
            nn.init.uniform_(module.weight, 0.5, 1.5)
            nn.init.uniform_(module.bias, -0.2, 0.2)
    with torch.no_grad():
        model.train()(torch.randn(8, 3, 32, 32))
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.momentum = 0.1
    return model.eval()


def tiny(name: str = "efficientnet_b0", width: float = 0.25) -> nn.Module:
    """A seven-block, narrow version of a family member: every block kind and stride, quickly (the
    interpreter's time grows with the channels)."""
    spec = scale_by_multipliers(get_entry(name).spec, depth=0.25, width=width, name=f"{name}_tiny")
    torch.manual_seed(0)
    return randomise_batchnorm(effnet.create_model(spec, num_classes=10))


def tuned_and_plain(fast: nn.Module, model: nn.Module, x: torch.Tensor, path) -> tuple[torch.Tensor, torch.Tensor]:
    """(fast(x), model(x)) with the tuning file at `path` in use, and no tuning file in use afterwards."""
    from effnet.fast import tuning

    tuning.use(path)
    try:
        with torch.inference_mode():
            return fast(x), model(x)
    finally:
        tuning.use(None)
