"""Getting, preparing and loading the faces."""
