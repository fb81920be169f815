"""`effnet bench` on CPU: the table, the JSON document and the one-line errors a user sees."""
import json

import pytest

from effnet.cli import main
from effnet.fast import tuning

FAST_ARGS = ["--batch-size", "2", "--image-size", "32", "--warmup", "1", "--repeats", "1", "--iterations", "1"]


def test_bench_tuning_none_times_the_kernels_defaults(capsys, tmp_path):
    """`--tuning none` drops whatever file was in use ($EFFNET_TUNING's, or the one shipped for this GPU)."""
    choices = tmp_path / "tuning.json"
    tuning.record(choices, "stem", dict(in_channels=3, out_channels=32, kernel_size=3, stride=2, height=32, width=32),
                  "direct", [], device="cpu", seconds=1, default_seconds=2)
    tuning.use(choices)
    assert main(["bench", "--model", "efficientnet_b0", *FAST_ARGS, "--task", "latency", "--libraries", "effnet",
                 "--no-fast", "--json", "--tuning", "none"]) == 0
    assert "tuning" not in json.loads(capsys.readouterr().out)["environment"]
    assert tuning.active() == {}


def test_bench_json_has_a_row_per_task_and_candidate(capsys, tmp_path):
    output, choices = tmp_path / "bench.json", tmp_path / "tuning.json"
    choices.write_text(json.dumps({"format": 1, "device": "cpu", "entries": []}))
    assert main(["bench", "--model", "efficientnet_b0", *FAST_ARGS, "--fuse-expansion", "--json",
                 "--output", str(output), "--tuning", str(choices)]) == 0
    tuning.use(None)
    document = json.loads(capsys.readouterr().out)
    assert json.loads(output.read_text()) == document
    assert document["environment"]["tuning"] == f"{choices} (0 layer shapes)"  # what shaped the fast rows
    assert document["config"]["device"] == "cpu" and document["config"]["precision"] == "fp32"
    rows = {(r["task"], r["candidate"]): r for r in document["rows"]}
    for task in ("inference", "latency", "training"):
        for candidate in ("effnet", "timm", "torchvision"):
            assert rows[(task, candidate)]["images_per_second"] > 0, (task, candidate)
    assert rows[("latency", "effnet")]["batch_size"] == 1
    # The fused inference path is timed and checked against the plain model.
    assert rows[("inference", "effnet-fast")]["error_vs_reference"] <= 1e-4
    assert rows[("inference", "effnet-fast-expand")]["error_vs_reference"] <= 1e-4
    assert rows[("training", "effnet-activations")]["images_per_second"] > 0


def test_bench_table_reports_ratios_and_unavailable_rows(capsys):
    assert main(["bench", "--model", "efficientnet_lite0", *FAST_ARGS, "--task", "inference", "training",
                 "--mode", "eager", "cudagraphs", "compile-cudagraphs", "--libraries", "effnet", "timm",
                 "torchvision"]) == 0
    out = capsys.readouterr().out
    assert "x timm eager" in out
    # torchvision has no Lite models, and CUDA graphs need a GPU: said in the row, not a crash.
    assert "torchvision has no efficientnet_lite0" in out
    graph_rows = [line for line in out.splitlines() if line.split()[1:2] in (["cudagraphs"], ["compile-cudagraphs"])]
    assert {(line.split()[0], line.split()[1]) for line in graph_rows} == {
        (task, mode) for task in ("inference", "training") for mode in ("cudagraphs", "compile-cudagraphs")}
    assert all("CUDA graphs need a CUDA device" in line for line in graph_rows)


def test_compile_freezing_rows_run_inference_only_and_match_the_reference(capsys):
    assert main(["bench", "--model", "efficientnet_b0", *FAST_ARGS, "--task", "inference", "training", "--mode",
                 "compile-freezing", "--libraries", "effnet", "--memory-saver", "none", "--json"]) == 0
    rows = {(r["task"], r["candidate"]): r for r in json.loads(capsys.readouterr().out)["rows"]}
    assert set(rows) == {("inference", "effnet"), ("inference", "effnet-fast"), ("training", "effnet")}
    for candidate in ("effnet", "effnet-fast"):
        row = rows[("inference", candidate)]
        assert row["images_per_second"] > 0 and row["error_vs_reference"] <= 1e-4, row
    assert rows[("training", "effnet")]["note"] == "freezing compiles the weights in as constants: inference only"


def test_compile_freezing_compiles_the_weights_in_as_constants():
    """Freezing reaches Inductor: a frozen model's output ignores a later change to its weights (they were
    compiled in as constants, BN folded into the conv); the plainly compiled one's follows it."""
    import torch

    from effnet.bench.measure import _compile, freeze

    x = torch.randn(1, 2, 5, 5)
    follows = {}
    for frozen in (False, True):
        model = torch.nn.Sequential(torch.nn.Conv2d(2, 3, 3), torch.nn.BatchNorm2d(3), torch.nn.ReLU()).eval()
        compiled = _compile(model)
        with torch.inference_mode():
            if frozen:
                freeze(compiled, x)
            before = compiled(x)
            model[0].weight.mul_(2)
            follows[frozen] = not torch.equal(compiled(x), before)
    assert follows == {False: True, True: False}


@pytest.mark.parametrize("args, message", [
    (["--device", "cuda"], "no CUDA device is available"),
    (["--model", "efficientnet_b99"], "efficientnet_b99"),
    (["--no-fast", "--unfused-stem", "--triton-depthwise"], "--unfused-stem and --triton-depthwise add fast-path rows"),
    (["--no-fast", "--fused-training"], "--fused-training add fast-path rows"),
    (["--tuning", "/nonexistent/tuning.json"], "tuning file /nonexistent/tuning.json not found"),
    # Zero is a mistake, not "the default" (batch 0 used to run the default batch of 32).
    (["--batch-size", "0"], "batch size must be at least 1, got 0"),
    (["--image-size", "4"], "image size must be at least 8, got 4"),
    (["--repeats", "0"], "repeats must be at least 1, got 0"),
    (["--iterations", "-1"], "iterations must be at least 1, got -1"),
])
def test_bench_bad_input_is_one_line(capsys, args, message):
    if args[0] == "--device":
        import torch

        if torch.cuda.is_available():
            pytest.skip("a GPU is present")
    assert main(["bench", *FAST_ARGS, *args]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1
