"""The GPU lease's shell scripts call the benchmark scripts with options those scripts accept. A lease is 15
minutes of a GPU, some sessions never get one, and a misspelt or removed option (session 17 removed the rolling
kernel's `--rolling-configs`, which four calls passed) would first fail there, its minutes spent. Each call
is parsed by its script's own argument parser here, in one process, without running it."""
import json
import re
import shlex
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHELL_SCRIPTS = ("gpu_lease.sh", "gpu_sweeps.sh", "with_compile_cache.sh")

# Parse each call's arguments with the script's own parser, then stop: a parser that accepts them raises Parsed.
CHECK = r"""
import argparse, json, os, runpy, sys
class Parsed(Exception):
    pass
real = argparse.ArgumentParser.parse_args
def parse_args(self, args=None, namespace=None):
    real(self, args, namespace)
    raise Parsed
argparse.ArgumentParser.parse_args = parse_args
failures = []
for script, argv in json.loads(sys.argv[1]):
    sys.argv = [script, *argv]
    sys.path.insert(0, os.path.dirname(os.path.abspath(script)))  # as `python3 SCRIPT` puts its folder first
    try:
        runpy.run_path(script, run_name="__main__")
        failures.append(f"{script} {argv}: ran without parsing its arguments")
    except Parsed:
        pass
    except SystemExit as error:
        failures.append(f"{script} {argv}: its parser refused them (exit {error.code})")
print(json.dumps(failures))
"""


def calls(text: str) -> list[tuple[str, list[str]]]:
    """Every `benchmarks/NAME.py ARGS` in a shell script's code (comments left out, continued lines joined),
    its shell variables given plausible values, up to the first pipe, redirection or command separator."""
    found = []
    for line in text.replace("\\\n", " ").splitlines():
        if line.lstrip().startswith("#"):
            continue
        for match in re.finditer(r"(benchmarks/\w+\.py)(.*)", line):
            args = re.sub(r"\$\(\(.*?\)\)", "150", match.group(2))  # "$(( LIMIT - SECONDS ... ))": a number
            args = re.split(r"\s\d*[<>]|[|;&]", args)[0]
            args = re.sub(r"\$\{\d+:-([^}]*)\}", r"\1", args)  # "${2:-270}": its default
            args = re.sub(r"\$(OUT|KEEP|CACHE)\b", "/tmp/effnet_lease_check", args)
            found.append((match.group(1), shlex.split(args)))
    return found


def _check(found: list[tuple[str, list[str]]]) -> subprocess.CompletedProcess:
    """`CHECK` run on these calls in a fresh interpreter (the scripts' imports as a lease runs them)."""
    return subprocess.run([sys.executable, "-c", CHECK, json.dumps(found)], cwd=ROOT, capture_output=True, text=True,
                          timeout=300, env={"PYTHONPATH": str(ROOT / "src"), "PATH": "/usr/bin:/bin"})


def test_lease_scripts_call_the_benchmarks_with_options_they_accept():
    found = [call for name in SHELL_SCRIPTS for call in calls((ROOT / "benchmarks" / name).read_text())]
    scripts = {script for script, _ in found}
    assert len(found) >= 20 and {"benchmarks/gpu_check.py", "benchmarks/depthwise_sweep.py",
                                 "benchmarks/bn_depthwise_sweep.py", "benchmarks/compile_cache.py"} <= scripts
    result = _check(found)
    assert result.returncode == 0, result.stderr[-3000:]
    failures = json.loads(result.stdout.strip().splitlines()[-1])
    assert not failures, failures + [result.stderr[-2000:]]


def test_a_removed_option_is_caught():
    """The check itself: an option no parser knows fails it."""
    (script, argv), = calls('timeout 9 python3 benchmarks/depthwise_sweep.py --configs 1 --rolling-configs 0 \\\n'
                            '  --out "$OUT" 2>&1 | tee log')
    assert argv == ["--configs", "1", "--rolling-configs", "0", "--out", "/tmp/effnet_lease_check"]
    result = _check([(script, argv)])
    assert "refused" in result.stdout and "--rolling-configs" in result.stderr
