"""Measurements on the device: latency and throughput of models.

The names below are what `effnet bench` offers; they load without torch, so the command line builds
its options without importing it.
"""
TASKS = ("inference", "latency", "training")
MODES = ("eager", "compile", "cudagraphs", "compile-cudagraphs")
# The modes that replay a captured CUDA graph (a GPU only).
GRAPH_MODES = ("cudagraphs", "compile-cudagraphs")
PRECISIONS = ("fp32", "bf16", "fp16")
