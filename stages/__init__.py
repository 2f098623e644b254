"""DVC stages: exactly one thin module per stage of dvc.yaml. Each parses its arguments, calls the library
(`agebench`) and writes its outputs atomically; nothing imports a stage."""
