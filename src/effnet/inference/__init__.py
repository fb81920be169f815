"""Inference: classify images with saved weights (`Predictor`) and evaluate weights on a data set."""
from effnet.inference.evaluation import (
    ClassMismatchError,
    check_classes,
    evaluate_weights,
    plot_confusion,
    write_confusion,
    write_report,
)
from effnet.inference.predict import (
    ImageInput,
    InferenceError,
    Predictor,
    class_labels,
    image_files,
    imagenet_class_names,
    resolve_device,
    weights_path,
)

__all__ = [
    "ClassMismatchError", "check_classes", "evaluate_weights", "plot_confusion", "write_confusion", "write_report",
    "ImageInput", "InferenceError", "Predictor", "class_labels", "image_files", "imagenet_class_names",
    "resolve_device", "weights_path",
]
