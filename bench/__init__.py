"""Benchmarks (not tests): training throughput against a reference-style loop, and sweep slot utilisation."""
