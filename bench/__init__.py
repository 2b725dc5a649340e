"""Benchmarks that compare Cortex Core with a minimal broadcast server and with other Python servers."""
