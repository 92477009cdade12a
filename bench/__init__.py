"""Benchmarks, one script each; see the README's "Performance" section."""
