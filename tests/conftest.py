"""Shared test set-up.

One intra-op thread per process: the machines here have two shared cores, where torch's default
of one thread per core makes small forward passes stall for seconds whenever another process
(a second test worker, a torchrun rank) wants a core. Subprocesses inherit it via OMP_NUM_THREADS.

Keras (a peer in the converter tests) runs on the PyTorch backend; it reads the choice at import.
Nothing in the suite may reach the network: the hubs' clients are told they are offline.
Without a GPU, Triton kernels run in Triton's interpreter (read when the kernels are defined, so
set before anything imports them); effnet only uses it where a test asks for Triton explicitly.
"""
import os

import torch

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("KERAS_BACKEND", "torch")
os.environ["HF_HUB_OFFLINE"] = "1"
torch.set_num_threads(1)
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
