"""Measurements on the device: latency and throughput of models."""
