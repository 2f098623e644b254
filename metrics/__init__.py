"""Scoring functions of tensors (PROTOCOL.md sections 4-5); pretrained networks are passed in."""
