"""The README's commands stay true to the code: every `effnet` command in its bash blocks parses with
the CLI as it is now (options renamed or removed would fail here), every script and example file it
names exists. Running them is the other tests' job (the commands train, search and download)."""
import re
import shlex
from pathlib import Path

import pytest

from effnet.cli import build_parser

ROOT = Path(__file__).resolve().parents[1]


def _commands() -> list[str]:
    """Each command of the README's bash blocks: comments dropped, `&&` chains split."""
    blocks = re.findall(r"```bash\n(.*?)```", (ROOT / "README.md").read_text(), flags=re.S)
    commands = []
    for line in "\n".join(blocks).splitlines():
        words = shlex.split(line, comments=True)
        while words:
            end = words.index("&&") if "&&" in words else len(words)
            commands.append(words[:end])
            words = words[end + 1:]
    return [" ".join(map(shlex.quote, words)) for words in commands if words]


COMMANDS = _commands()


def _effnet_arguments(words: list[str]) -> list[str] | None:
    """The arguments after `effnet` (or `torchrun ... -m effnet`), None for other programs."""
    if words[0] == ".venv/bin/effnet":
        return words[1:]
    if words[0] == ".venv/bin/torchrun" and "-m" in words and words[words.index("-m") + 1] == "effnet":
        return words[words.index("-m") + 2:]
    return None


def test_the_readme_shows_the_commands_the_tests_cover():
    effnet_commands = [c for c in COMMANDS if _effnet_arguments(shlex.split(c)) is not None]
    names = {shlex.split(c)[1] if not c.startswith(".venv/bin/torchrun") else "train" for c in effnet_commands}
    assert len(effnet_commands) >= 30
    assert {"list", "info", "scale", "search", "curves", "convert", "train", "eval", "predict", "data",
            "bench"} <= names


@pytest.mark.parametrize("command", [c for c in COMMANDS if _effnet_arguments(shlex.split(c)) is not None])
def test_every_effnet_command_in_the_readme_parses(command):
    arguments = _effnet_arguments(shlex.split(command))
    try:
        build_parser().parse_args(arguments)
    except SystemExit as stop:
        pytest.fail(f"the CLI rejects the README's `{command}` (exit {stop.code})")


def test_every_script_and_example_file_the_readme_names_exists():
    named = set()
    for command in COMMANDS:
        for word in shlex.split(command):
            if re.match(r"(benchmarks|examples)/", word):
                named.add(word)
    assert any(word.startswith("benchmarks/") for word in named)
    missing = sorted(word for word in named if not (ROOT / word).exists())
    assert not missing, f"the README names files that do not exist: {missing}"


def test_ci_runs_the_readmes_test_command():
    """The README's second set-up command (install with the test extras, run pytest) is what CI runs."""
    setup = re.search(r"```bash\n(.*?)```", (ROOT / "README.md").read_text(), flags=re.S).group(1).splitlines()
    assert len(setup) >= 2 and setup[1].endswith("-m pytest")
    assert setup[1] in (ROOT / ".ci" / "run").read_text()
