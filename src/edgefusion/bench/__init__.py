"""Latency and memory per pipeline component (``edgefusion bench``)."""
