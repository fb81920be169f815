"""The compile cache a GPU lease carries to the next (benchmarks/compile_cache.py): packed into parts the device
tool can return, restored file for file, newest folders kept whole when the cache is too big."""
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import compile_cache  # noqa: E402


def _cache(root: Path, folders: int, size: int) -> dict[str, bytes]:
    """Triton-like folders (a binary and the metadata naming it), each older than the next."""
    files = {}
    for index in range(folders):
        folder = root / "triton" / f"hash{index:02d}"
        folder.mkdir(parents=True)
        for name, data in ((f"kernel{index}.cubin", os.urandom(size)), (f"__grp__kernel{index}.json", b"{}" * 50)):
            (folder / name).write_bytes(data)
            os.utime(folder / name, (1000 + index, 1000 + index))
            files[f"triton/hash{index:02d}/{name}"] = data
    return files


def test_a_cache_comes_back_file_for_file_through_parts_of_bounded_size(tmp_path, monkeypatch):
    monkeypatch.setattr(compile_cache, "MARGIN", 0)  # the real 2 MiB would outweigh these small parts
    files = _cache(tmp_path / "cache", folders=6, size=40_000)
    packed, left = compile_cache.pack(tmp_path / "cache", tmp_path / "out", part_bytes=50_000, max_parts=10)
    parts = sorted((tmp_path / "out").glob("compile_cache.part*"))
    assert (packed, left) == (6, 0) and len(parts) >= 5  # random bytes do not compress: 240 kB in 50 kB parts
    assert all(p.stat().st_size <= 50_000 for p in parts)
    assert compile_cache.unpack(tmp_path / "out", tmp_path / "restored") == 12
    for name, data in files.items():
        assert (tmp_path / "restored" / name).read_bytes() == data


def test_a_cache_too_big_keeps_its_newest_folders_whole(tmp_path, monkeypatch):
    monkeypatch.setattr(compile_cache, "MARGIN", 0)
    _cache(tmp_path / "cache", folders=8, size=30_000)
    packed, left = compile_cache.pack(tmp_path / "cache", tmp_path / "out", part_bytes=40_000, max_parts=2)
    assert 0 < packed < 8 and packed + left == 8
    compile_cache.unpack(tmp_path / "out", tmp_path / "restored")
    kept = sorted(p.name for p in (tmp_path / "restored" / "triton").iterdir())
    assert kept == [f"hash{i:02d}" for i in range(8 - packed, 8)]  # the newest
    assert all(len(list((tmp_path / "restored" / "triton" / k).iterdir())) == 2 for k in kept)  # each whole


def test_a_cache_too_big_keeps_tritons_kernels_before_inductors_newer_graphs(tmp_path, monkeypatch):
    """Run 8: the kernels compiled before the lease keep that earlier time, and by age alone its packs left out
    all but 4 of 604 of them behind the graphs Inductor compiled there."""
    monkeypatch.setattr(compile_cache, "MARGIN", 0)
    _cache(tmp_path / "cache", folders=3, size=30_000)
    for index in range(3):
        graph = tmp_path / "cache" / "inductor" / f"graph{index}" / "output.py"
        graph.parent.mkdir(parents=True)
        graph.write_bytes(os.urandom(30_000))
        os.utime(graph, (5000 + index, 5000 + index))  # newer than every kernel
    packed, left = compile_cache.pack(tmp_path / "cache", tmp_path / "out", part_bytes=40_000, max_parts=3)
    assert 3 < packed < 6 and packed + left == 6
    compile_cache.unpack(tmp_path / "out", tmp_path / "restored")
    assert len(list((tmp_path / "restored" / "triton").iterdir())) == 3
    graphs = sorted(p.name for p in (tmp_path / "restored" / "inductor").iterdir())
    assert graphs == [f"graph{index}" for index in range(6 - packed, 3)]  # the newest graphs


def test_a_cache_that_compresses_well_comes_back_whole(tmp_path):
    # Inductor's generated sources compress tenfold and more: one small part holds many megabytes (the reader
    # streams them; session 10's sliced each part's whole decompressed text, minutes for a 45 MiB cache).
    text = b"".join(b"def kernel_%d(in_ptr0, out_ptr0, xnumel, XBLOCK: tl.constexpr):\n" % i for i in range(200_000))
    (tmp_path / "cache" / "inductor" / "ab").mkdir(parents=True)
    (tmp_path / "cache" / "inductor" / "ab" / "graph.py").write_bytes(text)
    compile_cache.pack(tmp_path / "cache", tmp_path / "out")
    parts = sorted((tmp_path / "out").glob("compile_cache.part*"))
    assert len(parts) == 1 and parts[0].stat().st_size < len(text) / 10
    assert compile_cache.unpack(tmp_path / "out", tmp_path / "restored") == 1
    assert (tmp_path / "restored" / "inductor" / "ab" / "graph.py").read_bytes() == text


def test_nothing_to_unpack_is_not_an_error(tmp_path):
    assert compile_cache.unpack(tmp_path / "absent", tmp_path / "cache") == 0
    assert compile_cache.pack(tmp_path / "absent", tmp_path / "out") == (0, 0)


def test_the_lease_wrapper_restores_the_cache_runs_the_command_and_packs_it_for_the_next_call(tmp_path):
    """benchmarks/with_compile_cache.sh as a lease runs it: the command sees the restored cache under
    TRITON_CACHE_DIR, its exit status is kept, and what it compiled comes back in OUT's parts."""
    import subprocess

    repo = Path(__file__).resolve().parents[1]
    _cache(tmp_path / "before", folders=2, size=1000)
    compile_cache.pack(tmp_path / "before", tmp_path / "work" / ".compile_cache")
    (tmp_path / "work" / "benchmarks").mkdir()
    script = repo / "benchmarks" / "compile_cache.py"
    (tmp_path / "work" / "benchmarks" / script.name).write_bytes(script.read_bytes())
    command = 'test -f "$TRITON_CACHE_DIR/hash01/kernel1.cubin" && mkdir "$TRITON_CACHE_DIR/new" && ' \
              'echo 1 > "$TRITON_CACHE_DIR/new/k.json" && exit 3'
    env = {**os.environ, "OUT": str(tmp_path / "out"), "EFFNET_COMPILE_CACHE": str(tmp_path / "cache")}
    done = subprocess.run(["bash", str(repo / "benchmarks" / "with_compile_cache.sh"), "sh", "-c", command],
                          cwd=tmp_path / "work", env=env, capture_output=True, text=True)
    assert done.returncode == 3, done.stderr
    assert compile_cache.unpack(tmp_path / "out", tmp_path / "after") == 5
    assert (tmp_path / "after" / "triton" / "new" / "k.json").read_text() == "1\n"
