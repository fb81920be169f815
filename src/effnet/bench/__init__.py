"""Measurements on the device: latency and throughput of models.

The names below are what `effnet bench` offers; they load without torch, so the command line builds
its options without importing it.
"""
TASKS = ("inference", "latency", "training")
MODES = ("eager", "compile", "cudagraphs", "compile-cudagraphs", "compile-freezing")
# The modes that replay a captured CUDA graph (a GPU only).
GRAPH_MODES = ("cudagraphs", "compile-cudagraphs")
# Inductor's freezing: the weights compiled in as constants (BN folded into the convolutions, oneDNN's weights
# prepacked on a CPU), as PyTorch advises for CPU inference; a model it compiled cannot train.
INFERENCE_MODES = ("compile-freezing",)
PRECISIONS = ("fp32", "bf16", "fp16")
