"""The command line: outputs a script relies on, and one clear line for user mistakes."""
import json
import subprocess
import sys

import pytest

import effnet
from effnet.cli import main


def torch_cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def run_json(capsys, *argv):
    assert main(list(argv)) == 0
    return json.loads(capsys.readouterr().out)


def test_list(capsys):
    assert run_json(capsys, "list", "--json") == effnet.list_models()
    assert main(["list", "*lite3"]) == 0
    assert capsys.readouterr().out.split() == ["efficientnet_lite3", "tf_efficientnet_lite3"]


def test_info_json(capsys):
    report = run_json(capsys, "info", "efficientnet_b0", "--json")
    assert report["name"] == "efficientnet_b0" and report["params"] == 5288548
    assert report["macs"] == effnet.count_macs(effnet.create_model("efficientnet_b0").spec)
    assert report["resolution"] == 224 and report["dropout"] == 0.2
    assert [(s["channels"], s["repeats"]) for s in report["stages"]][:2] == [(16, 1), (24, 2)]
    larger = run_json(capsys, "info", "efficientnet_b0", "--resolution", "448", "--json")
    assert larger["macs"] > 4 * report["macs"] * 0.99


def test_info_table(capsys):
    assert main(["info", "tf_efficientnet_lite2"]) == 0
    out = capsys.readouterr().out
    assert "relu6" in out and "padding same" in out and "MBConv6" in out


def test_scale_family_table(capsys):
    rows = run_json(capsys, "scale", "--json")
    assert [row["name"] for row in rows] == [f"efficientnet_b{i}" for i in range(8)]
    assert rows[7]["width"] == 2.0 and rows[7]["depth"] == 3.1 and rows[7]["resolution"] == 600
    assert all({"phi", "depth", "width", "resolution", "params", "macs"} <= set(row) for row in rows)
    assert main(["scale"]) == 0
    assert "efficientnet_b7" in capsys.readouterr().out


def test_scale_by_phi(capsys):
    rows = run_json(capsys, "scale", "--phi", "-1", "0", "0.5", "2", "--alpha", "1.2", "--json")
    assert [row["phi"] for row in rows] == [-1, 0, 0.5, 2]
    assert rows[3]["depth"] == pytest.approx(1.44) and rows[3]["width"] == pytest.approx(1.21)
    macs = [row["macs"] for row in rows]
    assert macs == sorted(macs)


@pytest.mark.parametrize("argv, message", [
    (["info", "efficientnet_b9"], "unknown model 'efficientnet_b9'; closest: efficientnet_b8"),
    (["scale", "--phi", "-10", "--beta", "1.5"], "less than one channel"),
    (["convert", "--from", "timm", "--model", "efficientnet_b0", "/nonexistent.pth", "/tmp/out.safetensors"],
     "not found"),
])
def test_user_mistakes_print_one_line(argv, message):
    result = subprocess.run([sys.executable, "-m", "effnet", *argv], capture_output=True, text=True)
    assert result.returncode == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1


IN_THE_WAY = "a file stands where a folder of the path would be"


@pytest.mark.parametrize("argv, message", [
    (["scale", "--phi", "1e9"], "phi 1e+09 scales past any network"),
    (["scale", "--base", "nosuch"], "unknown model 'nosuch'"),
    (["scale", "--phi", "1", "--num-classes", "-3"], "num_classes must be a whole number >= 0, got -3"),
    (["scale", "--max-latency-ms", "5", "--batch-size", "0"], "batch_size must be at least 1, got 0"),
    (["scale", "--max-latency-ms", "5", "--device", "tpu"], "device must be auto, cpu, cuda or cuda:N, got 'tpu'"),
    (["scale", "--phi", "1", "--save-spec", "{file}/spec.json"], f"--save-spec {{file}}/spec.json: {IN_THE_WAY}"),
    (["convert", "--from", "timm", "--model", "nosuch", "{file}", "{out}/w.safetensors"], "unknown model 'nosuch'"),
    (["convert", "{file}", "{file}/w.safetensors"], f"OUT {{file}}/w.safetensors: {IN_THE_WAY}"),
    (["list", "nosuch*"], "no registered model matches 'nosuch*'"),
    (["predict", "{file}", "--model", "nosuch"], "unknown model 'nosuch'"),
    (["bench", "--device", "tpu"], "device must be auto, cpu, cuda or cuda:N"),
    (["bench", "--output", "{file}/bench.json"], f"--output {{file}}/bench.json: {IN_THE_WAY}"),
    (["eval", "--weights", "{file}", "--output", "{file}/eval"], f"--output {{file}}/eval: {IN_THE_WAY}"),
    (["train", "--output", "{out}", "--optimizer", "lamb"], "optimizer must be one of rmsprop_tf, sgd, adamw"),
    (["train", "--output", "{file}/run"], f"output {{file}}/run: {IN_THE_WAY}"),
    (["train", "--output", "{out}", "--phi", "1e9"], "scales past any network"),
    (["train", "--output", "{out}", "--model", "resnet50", "--fused-training", "--channels-last", "--image-size",
      "16"], "fused_training: use_fused_training switches effnet's MBConv blocks; resnet50 has none"),
    (["search", "--output", "{out}", "--tolerance", "-1"], "tolerance must be positive"),
    (["search", "--output", "{out}", "--data", "{out}/missing"], "neither a folder nor one of builtin"),
    (["search", "--output", "{out}", "--gpus", "0", "--ray", "local"], "--gpus assigns this machine's GPUs"),
    (["curves", "--output", "{out}", "--data", "{empty}"], "no class folders in {empty}"),
])
def test_more_mistakes_print_one_line_and_start_nothing(tmp_path, capsys, argv, message):
    """Caught before any work (a training per search candidate, a benchmark's minutes), with nothing written."""
    paths = {"file": tmp_path / "a_file", "out": tmp_path / "out", "empty": tmp_path / "empty"}
    paths["file"].write_text("not a folder")
    paths["empty"].mkdir()
    assert main([part.format(**paths) for part in argv]) == 2
    err = capsys.readouterr().err
    assert message.format(**paths) in err and len(err.strip().splitlines()) == 1, err
    assert not paths["out"].exists() or not any(paths["out"].rglob("*.log"))


@pytest.mark.skipif(torch_cuda_available(), reason="checks a machine without a GPU")
def test_search_on_gpus_this_machine_lacks_is_refused_before_training(tmp_path, capsys):
    assert main(["search", "--output", str(tmp_path / "s"), "--gpus", "0,1"]) == 2
    assert "--gpus 0,1: device 'cuda:0': no CUDA device is available here" in capsys.readouterr().err
    assert not (tmp_path / "s" / "candidates").exists()


def test_effnet_warnings_print_as_one_line(tmp_path):
    """A skipped file is one `warning:` line, not a file name, line number and source line."""
    (tmp_path / "data" / "a").mkdir(parents=True)
    (tmp_path / "data" / "a" / "notes.jpg").write_text("not an image")
    result = subprocess.run([sys.executable, "-m", "effnet", "train", "--output", str(tmp_path / "o"), "--data",
                             str(tmp_path / "data")], capture_output=True, text=True, timeout=300)
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        f"warning: skipping {tmp_path}/data/a/notes.jpg: not an image Pillow can identify",
        f"effnet train: error: class 'a' in {tmp_path}/data has no readable images: every file was skipped "
        "(run `effnet data check` to see why)"]


def test_every_command_has_help(capsys):
    for command in ("list", "info", "scale", "search", "curves", "convert", "export", "train", "eval", "predict",
                    "data"):
        with pytest.raises(SystemExit) as exit_info:
            main([command, "--help"])
        assert exit_info.value.code == 0 and f"usage: effnet {command}" in capsys.readouterr().out
    result = subprocess.run([sys.executable, "-m", "effnet", "--help"], capture_output=True, text=True)
    assert result.returncode == 0 and "usage: effnet" in result.stdout


def test_help_and_the_analytic_commands_start_without_torch():
    """`effnet --help`, `list`, `info` and `scale` need no tensor: they start in a tenth of a second, not the
    ~4 s that importing torch and torchvision takes; commands that build models import it when they run."""
    script = ("import sys, contextlib, io\n"
              "from effnet.cli import main\n"
              "for argv in (['list'], ['info', 'efficientnet_b3', '--json'], ['scale', '--max-params', '12M']):\n"
              "    with contextlib.redirect_stdout(io.StringIO()):\n"
              "        assert main(argv) == 0, argv\n"
              "with contextlib.redirect_stdout(io.StringIO()), contextlib.suppress(SystemExit):\n"
              "    main(['bench', '--help'])\n"
              "loaded = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'torchvision'))\n"
              "print(len(loaded), loaded[:5])\n")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.startswith("0 []"), result.stdout[-500:]
