"""Shared infrastructure: files, errors, registry, devices, weights, speed."""
