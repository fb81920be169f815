"""Tests of effnet.data: bad files, awkward image modes, scanning, data sets, transforms, loader.

Every fixture is generated in tmp_path; the only shipped data used is sklearn's digits (and
Debian's Fashion-MNIST, when installed).
"""
from __future__ import annotations

import gzip
import io
import json
import pickle
import struct
import zlib
from pathlib import Path
from urllib.error import URLError

import numpy as np
import pytest
import torch
from PIL import Image

from effnet.data import (DataError, DatasetNotAvailableError, ImageFolderDataset, SkippedFileWarning, check_image,
                         load_cifar, load_dataset, load_digits_dataset, load_fashion_mnist, load_image,
                         load_image_folder, make_eval_transform, make_loader, make_train_transform, read_idx,
                         scan_dataset, stratified_split, to_rgb)
from effnet.errors import EffnetError
from effnet.spec.data import DataConfig

pytestmark = pytest.mark.filterwarnings("ignore::effnet.data.SkippedFileWarning")


# ---------------------------------------------------------------- fixture writers
def write_jpeg(path: Path, size: tuple[int, int] = (48, 32), color: tuple[int, int, int] = (200, 30, 30)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, color).save(path, "JPEG", quality=90)
    return path


def truncate_jpeg(path: Path) -> None:
    """Keep the header and half of the scan data: the header check passes, decoding fails."""
    # Noise: most of the file is scan data, so half of it keeps a complete header.
    noise = np.random.default_rng(1).integers(0, 256, (96, 96, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(noise).save(buffer, "JPEG", quality=90)
    path.write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def write_png_bomb(path: Path, side: int = 100_000) -> Path:
    """A valid PNG header claiming side x side pixels: Pillow must refuse it before decoding."""
    header = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", header)
                     + png_chunk(b"IDAT", zlib.compress(b"\x00")) + png_chunk(b"IEND", b""))
    return path


def write_bad_files(folder: Path) -> dict[str, Path]:
    """One file of each bad kind, keyed by kind."""
    folder.mkdir(parents=True, exist_ok=True)
    png = io.BytesIO()
    Image.new("RGB", (16, 16), (1, 2, 3)).save(png, "PNG")
    broken_png = bytearray(png.getvalue())
    broken_png[-20] ^= 0xFF  # flip a byte inside IDAT: its CRC no longer matches
    files = {
        "empty": folder / "empty.jpg",
        "not_image": folder / "text.jpg",
        "corrupt": folder / "corrupt.png",
        "bomb": write_png_bomb(folder / "bomb.png"),
        "wrong_extension": folder / "notes.txt",
    }
    files["empty"].write_bytes(b"")
    files["not_image"].write_text("this is not a JPEG")
    files["corrupt"].write_bytes(bytes(broken_png))
    files["wrong_extension"].write_text("labels by hand")
    files["truncated"] = folder / "truncated.jpg"
    truncate_jpeg(files["truncated"])
    return files


def make_tree(root: Path, layout: dict[str, int]) -> Path:
    """`layout` maps "split/class" or "class" to a number of good JPEGs; colours differ per class."""
    for index, (relative, count) in enumerate(sorted(layout.items())):
        for number in range(count):
            write_jpeg(root / relative / f"{number:03d}.jpg", color=(20 * index, 100, 200 - 10 * number))
    return root


def pixel(image: Image.Image, xy: tuple[int, int] = (0, 0)) -> tuple[int, ...]:
    return tuple(int(value) for value in np.asarray(image)[xy[1], xy[0]])


# ---------------------------------------------------------------- awkward but valid images
@pytest.mark.parametrize(("values", "mode", "expected_red"), [
    pytest.param(np.array([[[10, 20, 30]]], np.uint8), "RGB", [10], id="RGB-unchanged"),
    pytest.param(np.array([[100, 0]], np.uint8), "L", [100, 0], id="L-repeated"),
    pytest.param(np.array([[False, True]]), "1", [0, 255], id="1-black-white"),
    pytest.param(np.array([[-5, 65535, 70000, 32768]], np.int32), "I", [0, 255, 255, 128], id="I-clip-scale"),
    pytest.param(np.array([[-3.0, 100.4, 300.0]], np.float32), "F", [0, 100, 255], id="F-clip"),
])
def test_in_memory_modes_convert_to_rgb(values: np.ndarray, mode: str, expected_red: list[int]) -> None:
    converted = np.asarray(to_rgb(Image.fromarray(values)))
    assert Image.fromarray(values).mode == mode and converted.dtype == np.uint8 and converted.shape[-1] == 3
    assert converted[0, :, 0].tolist() == expected_red
    assert (converted[..., 0] == converted[..., 1]).all() or mode == "RGB"


def test_sixteen_bit_png_scales_to_eight_bits(tmp_path: Path) -> None:
    values = np.array([[0, 257, 1000, 32768, 65535]], dtype=np.uint16)
    path = tmp_path / "deep.png"
    Image.fromarray(values).save(path)
    with Image.open(path) as opened:
        assert opened.mode == "I;16"
    converted = np.asarray(load_image(path))
    # 1000 -> 3.9 -> 4 (Pillow's convert("L") would clip it to 255).
    assert converted[0, :, 0].tolist() == [0, 1, 4, 128, 255]
    assert (converted[..., 0] == converted[..., 2]).all()


def test_thirty_two_bit_i_mode_clips_then_scales() -> None:
    image = Image.fromarray(np.array([[-5, 65535, 70000, 32768]], dtype=np.int32), mode="I")
    assert np.asarray(to_rgb(image))[0, :, 1].tolist() == [0, 255, 255, 128]


def test_float_mode_clips_to_byte_range() -> None:
    image = Image.fromarray(np.array([[-3.0, 100.4, 300.0]], dtype=np.float32), mode="F")
    assert np.asarray(to_rgb(image))[0, :, 0].tolist() == [0, 100, 255]


def test_palette_without_transparency_uses_palette_colours(tmp_path: Path) -> None:
    image = Image.new("P", (2, 1))
    image.putpalette([255, 0, 0, 0, 255, 0])
    image.putpixel((1, 0), 1)
    image.save(tmp_path / "palette.png")
    converted = load_image(tmp_path / "palette.png")
    assert pixel(converted, (0, 0)) == (255, 0, 0) and pixel(converted, (1, 0)) == (0, 255, 0)


def test_palette_transparency_is_composited_over_white(tmp_path: Path) -> None:
    image = Image.new("P", (2, 1))
    image.putpalette([0, 0, 0, 0, 0, 255])
    image.putpixel((1, 0), 1)
    image.save(tmp_path / "transparent.png", transparency=0)
    converted = load_image(tmp_path / "transparent.png")
    assert pixel(converted, (0, 0)) == (255, 255, 255) and pixel(converted, (1, 0)) == (0, 0, 255)


def test_grayscale_with_alpha_la_is_composited_over_white(tmp_path: Path) -> None:
    image = Image.new("LA", (3, 1))
    for x, value in enumerate([(100, 0), (100, 255), (100, 128)]):
        image.putpixel((x, 0), value)
    image.save(tmp_path / "la.png")
    converted = np.asarray(load_image(tmp_path / "la.png"))[0, :, 0].tolist()
    assert converted[0] == 255 and converted[1] == 100
    assert abs(converted[2] - (100 * 128 + 255 * 127) / 255) <= 1  # alpha blend of 100 over white


def test_rgba_is_composited_over_white(tmp_path: Path) -> None:
    image = Image.new("RGBA", (2, 1), (255, 0, 0, 128))
    image.putpixel((1, 0), (0, 0, 0, 0))
    image.save(tmp_path / "rgba.png")
    converted = load_image(tmp_path / "rgba.png")
    red, green, blue = pixel(converted, (0, 0))
    assert red == 255 and abs(green - 127) <= 1 and abs(blue - 127) <= 1
    assert pixel(converted, (1, 0)) == (255, 255, 255)  # fully transparent: white, not black


def test_cmyk_jpeg_converts_to_rgb(tmp_path: Path) -> None:
    Image.new("CMYK", (8, 8), (0, 255, 255, 0)).save(tmp_path / "cmyk.jpg", quality=100)
    with Image.open(tmp_path / "cmyk.jpg") as opened:
        assert opened.mode == "CMYK"
    red, green, blue = pixel(load_image(tmp_path / "cmyk.jpg"), (4, 4))
    assert red >= 250 and green <= 5 and blue <= 5


def test_exif_rotated_jpeg_is_turned_upright(tmp_path: Path) -> None:
    image = Image.new("RGB", (40, 20), (255, 0, 0))
    image.paste((0, 0, 255), (20, 0, 40, 20))  # left half red, right half blue
    exif = image.getexif()
    exif[0x0112] = 6  # Orientation 6: display rotated 90 degrees clockwise
    image.save(tmp_path / "rotated.jpg", exif=exif.tobytes(), quality=95)
    upright = load_image(tmp_path / "rotated.jpg")
    assert upright.size == (20, 40)  # width and height swap
    assert pixel(upright, (10, 5))[0] > 200 and pixel(upright, (10, 35))[2] > 200  # red on top


# ---------------------------------------------------------------- bad files
@pytest.mark.parametrize("kind", ["empty", "not_image", "corrupt", "bomb"])
def test_header_check_names_each_bad_kind(tmp_path: Path, kind: str) -> None:
    files = write_bad_files(tmp_path)
    reason = check_image(files[kind])
    assert reason, kind
    if kind == "bomb":
        assert "decompression bomb" in reason
    if kind == "empty":
        assert reason == "empty file"


def test_truncated_jpeg_passes_the_header_check_but_not_a_full_decode(tmp_path: Path) -> None:
    files = write_bad_files(tmp_path)
    assert check_image(files["truncated"]) is None
    assert "truncated" in check_image(files["truncated"], full_decode=True)


def test_a_stricter_pixel_limit_refuses_large_images(tmp_path: Path) -> None:
    path = write_jpeg(tmp_path / "big.jpg", size=(100, 100))
    assert check_image(path) is None
    assert "exceeds the limit of 4096" in check_image(path, max_pixels=64 * 64)


def test_folder_skips_and_reports_every_bad_kind_by_name(tmp_path: Path) -> None:
    files = write_bad_files(tmp_path / "data" / "cats")
    make_tree(tmp_path / "data", {"cats": 2, "dogs": 2})
    with pytest.warns(SkippedFileWarning) as caught:
        dataset = ImageFolderDataset(tmp_path / "data", verify="full")
    skipped = {Path(item.path).name: item.reason for item in dataset.skipped}
    assert set(skipped) == {path.name for path in files.values()}
    assert "not an image file" in skipped["notes.txt"] and "decompression bomb" in skipped["bomb.png"]
    warned = " ".join(str(warning.message) for warning in caught)
    assert all(path.name in warned for path in files.values())
    assert len(dataset) == 4 and dataset.classes == ["cats", "dogs"]
    image, target = dataset[0]
    assert image.mode == "RGB" and target == 0


def test_load_time_failure_falls_back_to_the_next_sample(tmp_path: Path) -> None:
    make_tree(tmp_path / "data", {"a": 3})
    truncate_jpeg(tmp_path / "data" / "a" / "001.jpg")
    dataset = ImageFolderDataset(tmp_path / "data")
    assert dataset.skipped == []
    with pytest.warns(SkippedFileWarning, match="001.jpg"):
        fallback = dataset[1]
    assert np.array_equal(np.asarray(fallback[0]), np.asarray(dataset[2][0]))
    assert np.array_equal(np.asarray(dataset[1][0]), np.asarray(fallback[0]))  # same choice again
    assert [Path(item.path).name for item in dataset.skipped] == ["001.jpg"]


def test_skips_inside_loader_workers_reach_the_main_process(tmp_path: Path) -> None:
    make_tree(tmp_path / "data", {"a": 4, "b": 4})
    truncate_jpeg(tmp_path / "data" / "b" / "002.jpg")
    config = DataConfig(input_size=(3, 16, 16), crop_pct=0.875)
    dataset = ImageFolderDataset(tmp_path / "data", transform=make_eval_transform(config))
    loader = make_loader(dataset, batch_size=4, workers=2, seed=0)
    batches = [images for images, _ in loader]
    assert sum(len(batch) for batch in batches) == 8
    assert [Path(item.path).name for item in dataset.skipped] == ["002.jpg"]


# ---------------------------------------------------------------- layouts, splits and errors
def test_train_val_layout_shares_class_indices(tmp_path: Path) -> None:
    make_tree(tmp_path, {"train/ant": 2, "train/bee": 2, "val/bee": 1})
    train, val = load_image_folder(tmp_path)
    assert train.classes == val.classes == ["ant", "bee"]
    assert val.targets == [1]


def test_class_folders_split_by_seed_deterministically(tmp_path: Path) -> None:
    make_tree(tmp_path, {"ant": 10, "bee": 10})
    first_train, first_val = load_image_folder(tmp_path, val_fraction=0.3, seed=1)
    again_train, again_val = load_image_folder(tmp_path, val_fraction=0.3, seed=1)
    other_train, other_val = load_image_folder(tmp_path, val_fraction=0.3, seed=2)
    assert first_val.samples == again_val.samples and first_train.samples == again_train.samples
    assert first_val.samples != other_val.samples
    assert len(first_val) == 6 and sorted(first_val.targets) == [0, 0, 0, 1, 1, 1]
    assert not set(first_train.samples) & set(first_val.samples)
    train, val = stratified_split([0, 0, 1], val_fraction=0.9, seed=0)
    assert sorted(train + val) == [0, 1, 2] and 2 in train


@pytest.mark.parametrize(("layout", "message"), [
    (None, "data folder not found"),
    ({}, "no class folders"),
    ({"train/ant": 1, "val": 0}, "no class folders"),
    ({"val/ant": 1}, "no train/ folder"),
    ({"ant": 1, "bee": 1}, "val split of"),
])
def test_clear_errors_for_unusable_trees(tmp_path: Path, layout: dict[str, int] | None, message: str) -> None:
    root = tmp_path / "data"
    if layout is not None:
        root.mkdir()
        for relative, count in layout.items():
            (root / relative).mkdir(parents=True, exist_ok=True)
            make_tree(root, {relative: count})
    with pytest.raises(DataError, match=message) as caught:
        load_image_folder(root)
    assert isinstance(caught.value, EffnetError) and "\n" not in str(caught.value)


@pytest.mark.parametrize(("file_name", "message"), [("readme.txt", "has no images"),
                                                   ("broken.jpg", "no readable images")])
def test_empty_class_is_an_error_naming_the_class(tmp_path: Path, file_name: str, message: str) -> None:
    make_tree(tmp_path, {"ant": 2})
    (tmp_path / "bee").mkdir()
    (tmp_path / "bee" / file_name).write_text("not an image")
    with pytest.raises(DataError, match=f"class 'bee' .* {message}"):
        load_image_folder(tmp_path)


# ---------------------------------------------------------------- scan report
def test_scan_reports_bad_files_counts_and_empty_classes(tmp_path: Path) -> None:
    make_tree(tmp_path, {"train/ant": 3, "train/bee": 2, "val/ant": 1, "val/cow": 1})
    files = write_bad_files(tmp_path / "train" / "bee")
    (tmp_path / "train" / "dog").mkdir()
    report = scan_dataset(tmp_path)
    data = json.loads(json.dumps(report.as_dict()))
    assert data["splits"] == ["train", "val"]
    counts = {(row["split"], row["class_name"]): (row["images"], row["bad"]) for row in data["classes"]}
    assert counts[("train", "ant")] == (3, 0) and counts[("train", "bee")] == (2, len(files))
    assert counts[("train", "dog")] == (0, 0)
    assert {Path(row["path"]).name for row in data["bad_files"]} == {path.name for path in files.values()}
    assert all(row["reason"] for row in data["bad_files"])
    assert data["empty_classes"] == ["train/dog"]
    assert any("cow" in problem for problem in data["problems"])
    assert data["total_images"] == 7 and data["total_bad_files"] == len(files) and data["ok"] is False
    assert "truncated.jpg" in report.to_text()


def test_scan_of_a_clean_class_tree_is_ok_and_of_a_missing_one_raises(tmp_path: Path) -> None:
    make_tree(tmp_path, {"ant": 2, "bee": 1})
    report = scan_dataset(tmp_path)
    assert report.ok and report.splits == ["all"] and report.total_images == 3 and report.bad_files == []
    with pytest.raises(DataError, match="data folder not found"):
        scan_dataset(tmp_path / "nowhere")


# ---------------------------------------------------------------- built-in digits
def test_digits_are_the_real_sklearn_digits_and_deterministic() -> None:
    from sklearn.datasets import load_digits

    train, val = load_digits_dataset(image_size=24, seed=0)
    assert len(train) + len(val) == 1797 and len(val) == 359  # round(0.2 * count) per digit
    assert train.classes == [str(digit) for digit in range(10)] and len(set(train.targets)) == 10
    reference = load_digits()
    assert sorted(train.targets + val.targets) == sorted(reference.target.tolist())
    expected = np.rint(reference.images * 255 / 16).astype(np.uint8)
    stacked = np.concatenate([train.images, val.images])
    assert sorted(map(bytes, stacked)) == sorted(map(bytes, expected))  # same pixels, split apart
    again_train, _ = load_digits_dataset(image_size=24, seed=0)
    other_train, _ = load_digits_dataset(image_size=24, seed=1)
    assert np.array_equal(train.images, again_train.images) and train.targets == again_train.targets
    assert not np.array_equal(train.images, other_train.images)
    image, _ = train[0]
    assert image.size == (24, 24) and image.mode == "RGB"


def test_load_dataset_defaults_to_digits_with_transforms() -> None:
    config = DataConfig(input_size=(3, 32, 32), crop_pct=0.875)
    splits = load_dataset(train_transform=make_train_transform(config), eval_transform=make_eval_transform(config))
    assert splits.name == "digits" and len(splits.classes) == 10 and splits.skipped == []
    image, target = splits.val[0]
    assert image.shape == (3, 32, 32) and image.dtype == torch.float32 and 0 <= target < 10


def test_load_dataset_rejects_an_unknown_name(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="neither a folder nor one of"):
        load_dataset(str(tmp_path / "imagenet-typo"))


# ---------------------------------------------------------------- Fashion-MNIST (IDX)
def write_idx(path: Path, array: np.ndarray, compress: bool) -> Path:
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(struct.pack(">I", size) for size in array.shape)
    payload = header + array.astype(np.uint8).tobytes()
    path.write_bytes(gzip.compress(payload) if compress else payload)
    return path


@pytest.mark.parametrize("compress", [True, False])
def test_fashion_mnist_reads_idx_fixtures(tmp_path: Path, compress: bool) -> None:
    images = np.arange(3 * 28 * 28, dtype=np.int64).reshape(3, 28, 28) % 256
    labels = np.array([9, 0, 4])
    suffix = ".gz" if compress else ""
    write_idx(tmp_path / f"t10k-images-idx3-ubyte{suffix}", images, compress)
    write_idx(tmp_path / f"t10k-labels-idx1-ubyte{suffix}", labels, compress)
    dataset = load_fashion_mnist(tmp_path, train=False, image_size=32, search_dirs=[tmp_path])
    assert len(dataset) == 3 and dataset.targets == [9, 0, 4] and dataset.classes[9] == "Ankle boot"
    assert np.array_equal(dataset.images, images.astype(np.uint8))
    image, target = dataset[0]
    assert image.size == (32, 32) and image.mode == "RGB" and target == 9


def test_idx_reader_rejects_bad_files(tmp_path: Path) -> None:
    (tmp_path / "bad").write_bytes(b"\x01\x02\x03\x04")
    with pytest.raises(DataError, match="bad magic"):
        read_idx(tmp_path / "bad")
    write_idx(tmp_path / "short", np.zeros((2, 4, 4)), compress=False)
    (tmp_path / "short").write_bytes((tmp_path / "short").read_bytes()[:-3])
    with pytest.raises(DataError, match="truncated or padded"):
        read_idx(tmp_path / "short")


def test_fashion_mnist_missing_says_what_to_fetch_and_where(tmp_path: Path) -> None:
    with pytest.raises(DatasetNotAvailableError) as caught:
        load_fashion_mnist(tmp_path, train=True, search_dirs=[tmp_path])
    message = str(caught.value)
    assert "train-images-idx3-ubyte.gz" in message and str(tmp_path) in message and "\n" not in message


@pytest.mark.skipif(not Path("/usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz").is_file(),
                    reason="Debian's dataset-fashion-mnist is not installed")
def test_fashion_mnist_from_the_debian_package() -> None:
    dataset = load_fashion_mnist(train=False, search_dirs=[Path("/usr/share/datasets/fashion-mnist")])
    assert len(dataset) == 10000 and sorted(set(dataset.targets)) == list(range(10))


# ---------------------------------------------------------------- CIFAR (python pickle batches)
def write_cifar_batch(path: Path, count: int, offset: int, label_key: str) -> None:
    data = (np.arange(count * 3072).reshape(count, 3072) + offset) % 256  # rows of R, G, B planes
    entry = {"data": data.astype(np.uint8), label_key: [(offset + index) % 10 for index in range(count)]}
    path.write_bytes(pickle.dumps(entry))


def make_cifar10_fixture(root: Path) -> Path:
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    for number in range(1, 6):
        write_cifar_batch(folder / f"data_batch_{number}", count=2, offset=number, label_key="labels")
    write_cifar_batch(folder / "test_batch", count=3, offset=0, label_key="labels")
    names = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    (folder / "batches.meta").write_bytes(pickle.dumps({"label_names": names}))
    return root


# Each process of the test below loads CIFAR-10 with download=True into one folder; the network fetch is stood in
# for by a second's wait and the fixture written, and refuses to start while another process is inside it.
RACING_DOWNLOAD = """
import os, sys, time
from pathlib import Path
sys.path.insert(0, sys.argv[2])
import effnet.data.cifar as cifar
from test_data import make_cifar10_fixture

def fetch(url, download_root, filename, md5):
    inside = os.open(Path(download_root) / "fetching", os.O_CREAT | os.O_EXCL)  # FileExistsError if not alone
    time.sleep(1.0)
    make_cifar10_fixture(Path(download_root))
    os.close(inside)
    os.remove(Path(download_root) / "fetching")
    print("fetched", file=sys.__stdout__, flush=True)  # (the fetch runs with stdout sent to stderr)

cifar.download_and_extract_archive = fetch
print(len(cifar.load_cifar("cifar10", Path(sys.argv[1]), download=True, verify_checksums=False)))
"""


def test_processes_downloading_one_data_set_take_turns(tmp_path: Path) -> None:
    """A search's parallel candidates and torchrun's ranks each load a named data set with download=True: the
    first fetches it, the others wait and find its files instead of fetching into the same folder at once."""
    import subprocess
    import sys

    root, tests = tmp_path / "data", str(Path(__file__).parent)
    processes = [subprocess.Popen([sys.executable, "-c", RACING_DOWNLOAD, str(root), tests], stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True) for _ in range(3)]
    outputs = [process.communicate(timeout=120) for process in processes]
    assert [process.returncode for process in processes] == [0, 0, 0], [err[-2000:] for _, err in outputs]
    assert sorted(out.split() for out, _ in outputs) == [["10"], ["10"], ["fetched", "10"]]
    (tmp_path / "a file").write_text("")
    with pytest.raises(DatasetNotAvailableError, match="cannot download into .*a file/data: ") as caught:
        load_cifar("cifar10", tmp_path / "a file" / "data", download=True)
    assert "\n" not in str(caught.value)


def test_cifar10_fixture_loads_without_checksums(tmp_path: Path) -> None:
    make_cifar10_fixture(tmp_path)
    train = load_cifar("cifar10", tmp_path, train=True, verify_checksums=False)
    test = load_cifar("cifar10", tmp_path, train=False, verify_checksums=False)
    assert len(train) == 10 and len(test) == 3 and train.classes[3] == "cat" and train.skipped == []
    image, target = test[1]
    expected = ((np.arange(3072) + 3072) % 256).reshape(3, 32, 32).transpose(1, 2, 0)  # CHW rows -> HWC
    assert np.array_equal(np.asarray(image), expected) and target == 1


def test_cifar100_fixture_uses_fine_labels(tmp_path: Path) -> None:
    folder = tmp_path / "cifar-100-python"
    folder.mkdir()
    write_cifar_batch(folder / "train", count=4, offset=0, label_key="fine_labels")
    write_cifar_batch(folder / "test", count=2, offset=0, label_key="fine_labels")
    (folder / "meta").write_bytes(pickle.dumps({"fine_label_names": [f"class{index}" for index in range(100)]}))
    train = load_cifar("cifar100", tmp_path, verify_checksums=False)
    assert len(train) == 4 and train.targets == [0, 1, 2, 3] and len(train.classes) == 100


def test_cifar_missing_or_altered_files_are_one_line_errors(tmp_path: Path) -> None:
    with pytest.raises(DatasetNotAvailableError) as caught:
        load_cifar("cifar10", tmp_path)
    message = str(caught.value)
    assert "cifar-10-python.tar.gz" in message and str(tmp_path) in message and "\n" not in message
    make_cifar10_fixture(tmp_path)  # right layout, not the published bytes
    with pytest.raises(DataError, match="do not match their published checksums"):
        load_cifar("cifar10", tmp_path)


def test_cifar_download_offline_is_a_one_line_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def offline(*args: object, **kwargs: object) -> None:
        raise URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr("effnet.data.cifar.download_and_extract_archive", offline)
    with pytest.raises(DatasetNotAvailableError, match="could not download CIFAR-100 .* offline, fetch"):
        load_cifar("cifar100", tmp_path, download=True)


# ---------------------------------------------------------------- transforms and loader
def test_eval_transform_resizes_by_crop_pct_then_centre_crops() -> None:
    config = DataConfig(input_size=(3, 224, 224), crop_pct=0.875, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
    transform = make_eval_transform(config)
    assert transform.transforms[1].size == [256]
    output = transform(Image.new("RGB", (500, 375), (255, 0, 0)))
    assert output.shape == (3, 224, 224) and output.dtype == torch.float32
    assert torch.allclose(output[:, 100, 100], torch.tensor([1.0, -1.0, -1.0]), atol=0.02)


def test_train_transform_crops_to_size_with_auto_augment() -> None:
    config = DataConfig(input_size=(3, 64, 64), crop_pct=0.875, interpolation="bilinear")
    torch.manual_seed(0)
    output = make_train_transform(config, auto_augment="imagenet")(Image.new("RGB", (500, 375), (9, 99, 199)))
    assert output.shape == (3, 64, 64) and output.dtype == torch.float32


def test_one_channel_configs_and_option_errors() -> None:
    config = DataConfig(input_size=(1, 32, 32), crop_pct=1.0)
    assert make_eval_transform(config)(Image.new("RGB", (40, 40))).shape == (1, 32, 32)
    with pytest.raises(DataError, match="interpolation"):
        make_eval_transform(DataConfig(input_size=(3, 32, 32), crop_pct=0.9, interpolation="lanczos"))
    with pytest.raises(DataError, match="auto_augment"):
        make_train_transform(DataConfig(input_size=(3, 32, 32), crop_pct=0.9), auto_augment="rand-m9")


def test_loader_order_is_reproducible_by_seed_and_sampler_excludes_shuffle() -> None:
    dataset = torch.utils.data.TensorDataset(torch.arange(40))

    def order(seed: int) -> list[int]:
        return [int(value) for (batch,) in make_loader(dataset, 8, shuffle=True, seed=seed) for value in batch]

    assert order(3) == order(3) and order(3) != order(4) and sorted(order(3)) == list(range(40))
    with pytest.raises(DataError, match="exclude each other"):
        make_loader(dataset, 2, shuffle=True, sampler=torch.utils.data.SequentialSampler(dataset))
