"""Benchmarks comparing vijax with hand-written JAX and NumPyro (see README.md)."""
