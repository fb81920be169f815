"""Shared test set-up.

One intra-op thread per process: the machines here have two shared cores, where torch's default
of one thread per core makes small forward passes stall for seconds whenever another process
(a second test worker, a torchrun rank) wants a core. Subprocesses inherit it via OMP_NUM_THREADS.
"""
import os

import torch

os.environ.setdefault("OMP_NUM_THREADS", "1")
torch.set_num_threads(1)
