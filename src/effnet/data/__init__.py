"""Data: data sets that skip bad files, a tree scanner, transforms and a reproducible loader.

Every data set here is a torch Dataset with `classes` (names) and `skipped` (files left out,
as SkippedFile(path, reason)). See each module's docstring for the choices made.
"""
from effnet.data.arrays import ArrayImageDataset
from effnet.data.cifar import Cifar10Dataset, Cifar100Dataset, load_cifar
from effnet.data.datasets import DATASET_NAMES, DataSplits, check_source, default_data_root, load_dataset
from effnet.data.digits import load_digits_dataset
from effnet.data.errors import DataError, DatasetNotAvailableError, ImageLoadError, SkippedFileWarning
from effnet.data.fashion_mnist import fashion_mnist_search_dirs, load_fashion_mnist
from effnet.data.folder import ImageFolderDataset, load_image_folder
from effnet.data.idx import read_idx
from effnet.data.images import check_image, load_image, to_rgb
from effnet.data.loader import make_loader, seed_worker
from effnet.data.scan import BadFile, ClassCount, ScanReport, scan_dataset
from effnet.data.skipped import SkippedFile
from effnet.data.splits import stratified_split
from effnet.data.transforms import make_eval_transform, make_train_transform

__all__ = [
    "ArrayImageDataset", "Cifar10Dataset", "Cifar100Dataset", "load_cifar",
    "DATASET_NAMES", "DataSplits", "check_source", "default_data_root", "load_dataset", "load_digits_dataset",
    "DataError", "DatasetNotAvailableError", "ImageLoadError", "SkippedFileWarning",
    "fashion_mnist_search_dirs", "load_fashion_mnist", "ImageFolderDataset", "load_image_folder",
    "read_idx", "check_image", "load_image", "to_rgb", "make_loader", "seed_worker",
    "BadFile", "ClassCount", "ScanReport", "scan_dataset", "SkippedFile", "stratified_split",
    "make_eval_transform", "make_train_transform",
]
