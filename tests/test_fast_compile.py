"""The fused inference model under graph tracers: `torch.compile(fullgraph=True)` and `torch.export`
take it in one graph, its Triton passes as effnet's custom operators, and compute the same logits."""
import pytest
import torch

from effnet.fast import custom_ops, optimize_for_inference
from kernel_helpers import DEVICE, needs_triton, relative_error, tiny

OPERATORS = {"effnet.fused_depthwise.default", "effnet.fused_pointwise.default", "effnet.fused_stem.default"}


def _channels_last(x: torch.Tensor) -> torch.Tensor:
    return x.contiguous(memory_format=torch.channels_last)


def _called(graph: torch.fx.Graph) -> set[str]:
    return {str(node.target) for node in graph.nodes if node.op == "call_function"}


@pytest.fixture(scope="module")
def models():
    """(the fused model on Triton, the same on PyTorch: the function both compute, in milliseconds)."""
    model = tiny().to(DEVICE)
    return (optimize_for_inference(model, use_triton=True, fuse_stem=True),
            optimize_for_inference(model, use_triton=False, fuse_stem=True))


@needs_triton
def test_compiled_fast_model_is_one_graph_of_the_fused_operators(models):
    """Without the operators Dynamo cannot trace a kernel launch (`fullgraph=True` would fail)."""
    fast_model, reference = models
    graphs = []

    def record(graph_module, example_inputs):
        graphs.append(graph_module.graph)
        return graph_module.forward

    x = torch.randn(1, 3, 16, 16, device=DEVICE)  # the interpreter takes seconds per forward
    with torch.inference_mode():
        compiled = torch.compile(fast_model, fullgraph=True, backend=record)
        assert relative_error(compiled(x), reference(x)) <= 1e-5
    assert len(graphs) == 1 and OPERATORS <= _called(graphs[0])


@needs_triton
def test_exported_fast_model_runs_the_fused_operators_at_any_batch_size(models):
    fast_model, reference = models
    batch = torch.export.Dim("batch", min=1, max=1024)
    exported = torch.export.export(fast_model, (torch.randn(2, 3, 16, 16, device=DEVICE),),
                                   dynamic_shapes=({0: batch},))
    assert OPERATORS <= _called(exported.graph)
    x = torch.randn(1, 3, 16, 16, device=DEVICE)  # another batch size and other data than the traced example
    with torch.inference_mode():
        assert relative_error(exported.module()(x), reference(x)) <= 1e-5


@needs_triton
def test_fused_operators_pass_pytorchs_operator_checks():
    """Schema, fake functions (shapes, dtypes, channels-last strides) and dispatch of the three operators."""
    torch.manual_seed(3)
    x = _channels_last(torch.randn(2, 12, 7, 9, device=DEVICE))
    taps, bias = torch.randn(9, 12, device=DEVICE), torch.randn(12, device=DEVICE)
    weight_t, out_bias = torch.randn(12, 8, device=DEVICE), torch.randn(8, device=DEVICE)
    gate = torch.rand(2, 12, device=DEVICE)
    residual = _channels_last(torch.randn(2, 8, 7, 9, device=DEVICE))
    image = torch.randn(2, 3, 9, 8, device=DEVICE)  # the stem reads NCHW as given
    cases = [(custom_ops.fused_depthwise, (x, taps, bias, 3, 2, [1, 1], [4, 5], True, True)),
             (custom_ops.fused_depthwise, (x, taps, bias, 3, 1, [1, 1], [7, 9], False, False)),
             (custom_ops.fused_pointwise, (x, weight_t, out_bias, False, gate, residual)),
             (custom_ops.fused_pointwise, (x, weight_t, out_bias, True, None, None)),
             (custom_ops.fused_stem, (image, torch.randn(27, 8, device=DEVICE), out_bias, 3, 2, [1, 1], [5, 4]))]
    for op, args in cases:
        results = torch.library.opcheck(op, args, test_utils=("test_schema", "test_faketensor",
                                                               "test_aot_dispatch_static"))
        assert set(results.values()) == {"SUCCESS"}, (op, results)
