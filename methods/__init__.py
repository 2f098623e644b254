"""Face-aging methods: one module per method (see methods/registry.yaml); pure networks and training steps."""
