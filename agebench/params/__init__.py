"""Params.yaml sections as typed, frozen configs."""
