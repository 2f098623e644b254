"""Face-aging methods. Importing this package registers every built-in method in METHODS.

To add a method: put a `Method` subclass in `methods/<name>.py`, decorate it with
`@METHODS.register("<name>")`, and import the module below (or run `agebench new-method NAME`).
"""

# Registration happens on import; keep one module per line.
from methods import (  # noqa: F401
    age_cgan,
    cyclegan_agevec,
    cyclegan_keras,
    cyclegan_perceptual,
    identity,
)
from methods.registry import METHODS

__all__ = ["METHODS"]
