"""External rows: methods run elsewhere, scored here."""
