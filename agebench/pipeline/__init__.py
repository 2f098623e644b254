"""The pipeline's steps: train, generate, evaluate, reference, scoring."""
