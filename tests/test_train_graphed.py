"""`effnet train --cuda-graphs` (`effnet.train.graphed`): the step a CUDA graph replays trains as the loop's own
step does (the learning rate read from a device tensor, the optimizers that take one), its misuses are refused in
one line, and on a GPU a captured run ends with the weights an eager run ends with."""
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file
from torch import nn

import effnet
from effnet.models import get_entry
from effnet.scaling import scale_by_phi
from effnet.train import resolve_config
from effnet.train.config import ConfigError
from effnet.train.engine import Precision, train_one_epoch
from effnet.train.graphed import GraphedStep, TrainStep
from effnet.train.optim import RMSpropTF, build_optimizer

# A schedule that moves (a rate frozen into the step would show), of rates float32 holds exactly: the device
# tensor is float32. The tiny network at 4-8 images a batch is chaotic (float32's rounding grows to percents in
# six steps), so the comparisons run in float64.
RATES = [2.0 ** -5, 2.0 ** -4, 2.0 ** -4, 3 * 2.0 ** -7, 2.0 ** -6, 2.0 ** -6]


def _tiny(drop: float | None = None) -> nn.Module:
    """A tiny float64 B0 in training mode; `drop`: its dropout and stochastic depth rates (default: the
    variant's)."""
    torch.manual_seed(0)
    rates = {} if drop is None else {"drop_rate": drop, "drop_path_rate": drop}
    spec = scale_by_phi(get_entry("efficientnet_b0").spec, -3)
    return effnet.create_model(spec, num_classes=5, **rates).train().double()


def _batches() -> list[tuple[torch.Tensor, torch.Tensor]]:
    generator = torch.Generator().manual_seed(1)
    return [(torch.randn(8, 3, 32, 32, generator=generator, dtype=torch.float64),
             torch.randint(0, 5, (8,), generator=generator)) for _ in RATES]


def _epoch(name: str, whole: bool) -> tuple[nn.Module, dict, torch.optim.Optimizer]:
    model = _tiny()
    optimizer = build_optimizer(model, name, lr=0.05, weight_decay=1e-3, capturable=whole)
    precision = Precision(None, None)
    criterion = nn.CrossEntropyLoss(label_smoothing=0.1)
    step = TrainStep(model, optimizer, criterion, precision=precision, device=torch.device("cpu"), clip_grad_norm=0.5)
    torch.manual_seed(7)  # stochastic depth draws the same numbers in both loops
    result = train_one_epoch(model, _batches(), optimizer, criterion, device=torch.device("cpu"), precision=precision,
                             learning_rate=lambda index: RATES[index], first_step=0, clip_grad_norm=0.5,
                             read_every=2, whole_step=step.run if whole else None)
    return model, result, optimizer


@pytest.mark.parametrize("name", ["rmsprop_tf", "sgd"])
def test_the_graph_safe_step_trains_as_the_loop_does(name):
    """The step a graph replays (`TrainStep`: the rate from a device tensor, the optimizer built `capturable`: SGD
    fused), run eagerly through the loop, ends an epoch with the loop's own weights, running statistics and loss,
    at a learning rate that changes each step, with weight decay, gradient clipping and stochastic depth."""
    expected, expected_result, _ = _epoch(name, whole=False)
    got, result, optimizer = _epoch(name, whole=True)
    for (key, value), reference in zip(got.state_dict().items(), expected.state_dict().values(), strict=True):
        assert torch.allclose(value, reference, rtol=1e-9, atol=1e-12), key
    assert result["loss"] == pytest.approx(expected_result["loss"], rel=1e-9)
    assert result["step"] == len(RATES)
    assert [group["lr"] for group in optimizer.param_groups] == [RATES[-1]] * 2  # floats again, for checkpoints
    assert all(isinstance(group["lr"], float) for group in optimizer.state_dict()["param_groups"])


def test_rmsproptf_takes_its_rate_as_a_tensor():
    """RMSpropTF with the rate as a one-element tensor (a captured step's) moves the weights as with the float."""
    weights = []
    for as_tensor in (False, True):
        model = _tiny()
        optimizer = RMSpropTF(model.parameters(), lr=0.01, weight_decay=1e-4)
        for rate, (images, targets) in zip(RATES, _batches()):
            optimizer.param_groups[0]["lr"] = torch.tensor(rate, dtype=torch.float32) if as_tensor else rate
            optimizer.zero_grad(set_to_none=True)
            nn.functional.cross_entropy(model(images), targets).backward()
            optimizer.step()
        weights.append(torch.cat([p.detach().flatten() for p in model.parameters()]))
    assert torch.allclose(weights[1], weights[0], rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("options, message", [
    ({"cuda_graphs": True, "amp": "fp16"}, "cannot replay fp16's loss scaling"),
    ({"cuda_graphs": True, "grad_accum_steps": 2}, "does not combine with grad_accum_steps"),
    ({"cuda_graphs": True, "memory_saver": "stages"}, "not supported with a memory_saver"),
])
def test_misused_graphs_are_refused(options, message):
    with pytest.raises(ConfigError, match=message):
        resolve_config({"output": "unused", **options})


def test_a_whole_step_takes_one_batch_a_step():
    model = _tiny()
    with pytest.raises(ValueError, match="one batch a step"):
        train_one_epoch(model, _batches(), build_optimizer(model, "sgd", 0.1, 0.0), nn.CrossEntropyLoss(),
                        device=torch.device("cpu"), precision=Precision(None, None), learning_rate=lambda i: 0.1,
                        first_step=0, grad_accum_steps=2, whole_step=lambda images, targets, lr: None)


def test_a_graphed_step_needs_a_cuda_device():
    model = _tiny()
    step = TrainStep(model, build_optimizer(model, "sgd", 0.1, 0.0), nn.CrossEntropyLoss(),
                     precision=Precision(None, None), device=torch.device("cpu"))
    with pytest.raises(ValueError, match="CUDA graphs need a CUDA device; got cpu"):
        GraphedStep(step)


TINY = ["--phi", "-3", "--image-size", "16", "--workers", "0", "--epochs", "1", "--val-fraction", "0.7",
        "--seed", "5"]


def test_graphs_without_a_gpu_are_one_clear_error(tmp_path):
    result = subprocess.run([sys.executable, "-m", "effnet", "train", "--output", str(tmp_path / "run"), *TINY,
                             "--device", "cpu", "--cuda-graphs"], capture_output=True, text=True, timeout=300)
    assert result.returncode != 0
    assert "cuda_graphs captures the training step on a GPU: it needs a CUDA device (this run's is cpu)" in \
        result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a GPU")
@pytest.mark.parametrize("extra", [[], ["--fused-training", "--channels-last"], ["--optimizer", "sgd", "--lr", "0.01"],
                                   ["--optimizer", "rmsprop_tf", "--lr", "0.002", "--amp", "bf16",
                                    "--clip-grad-norm", "1"]])
def test_a_captured_run_trains_as_the_eager_run(tmp_path, extra):
    """`effnet train --cuda-graphs` on the built-in digits (about 40 steps, all but 3 replayed, the learning rate
    rising through its warm-up) moves the weights as the same run does eagerly. The tiny network is chaotic: on a
    CPU, weights 1e-7 apart at the start end 2-5% apart in their change over 40 such steps, and a rate frozen at
    the capture's step 80-94%; so the bound on the change after the first step is 20%. No dropout or stochastic
    depth: a replay draws other random numbers than eager mode."""
    from effnet.cli import main
    from effnet.train.checkpoint import load_checkpoint

    common = ["--device", "cuda", "--drop-rate", "0", "--drop-path-rate", "0", "--deterministic",
              "--checkpoint-every", "1", "--keep-last", "1000", *TINY, *extra]
    assert main(["train", "--output", str(tmp_path / "eager"), *common]) == 0
    assert main(["train", "--output", str(tmp_path / "graphs"), *common, "--cuda-graphs"]) == 0
    first = load_checkpoint(tmp_path / "eager" / "checkpoints" / f"step-{1:09d}.pt")["model"]
    eager = load_file(tmp_path / "eager" / "model.safetensors")
    graphs = load_file(tmp_path / "graphs" / "model.safetensors")
    keys = [key for key, value in eager.items() if value.is_floating_point() and key in first]
    moved = torch.cat([(eager[key].float() - first[key].float().cpu()).flatten() for key in keys])
    apart = torch.cat([(graphs[key].float() - eager[key].float()).flatten() for key in keys])
    assert moved.norm() > 0
    assert apart.norm() <= 0.2 * moved.norm(), float(apart.norm() / moved.norm())


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a GPU")
def test_the_graphed_step_replays_with_each_steps_batch_and_rate():
    """After its eager steps, each call copies its batch in, sets the rate and replays: the losses and weights of
    the same step run eagerly (float64: the same kernels, whose rounding the chaos cannot grow past 1e-7), and
    another batch shape is refused."""
    import copy

    device = torch.device("cuda")
    eager = _tiny(drop=0.0).to(device)  # no random numbers: a replay draws others than eager mode
    graphed = copy.deepcopy(eager)
    batches = [(images.to(device), targets.to(device)) for images, targets in _batches()]
    steps = []
    for model in (eager, graphed):
        optimizer = build_optimizer(model, "rmsprop_tf", lr=0.05, weight_decay=1e-3, capturable=model is graphed)
        steps.append(TrainStep(model, optimizer, nn.CrossEntropyLoss(), precision=Precision(None, None),
                               device=device))
    replay = GraphedStep(steps[1], eager_steps=2)
    for rate, (images, targets) in zip(RATES, batches):
        expected = steps[0].run(images, targets, rate)
        assert torch.allclose(replay(images, targets, rate), expected, rtol=1e-7)
    assert replay.graph is not None
    for got, reference in zip(graphed.parameters(), eager.parameters(), strict=True):
        assert torch.allclose(got, reference, rtol=1e-7, atol=1e-10)
    with pytest.raises(ValueError, match="captured for batches of"):
        replay(batches[0][0][:2], batches[0][1][:2], 0.01)
