"""The method registry: `params.yaml` name -> Method subclass."""

from agebench.registry import Registry
from methods.base import Method

METHODS: Registry[type[Method]] = Registry("method", base=Method)
