"""The `agebench` commands: one module each."""
