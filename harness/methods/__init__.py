"""Methods: every way of answering a problem, behind one interface (see `harness.methods.base`)."""

from harness.methods.base import Attempt, Generation, Method, MethodCache
from harness.methods.registry import get_method, method_of

__all__ = ["Attempt", "Generation", "Method", "MethodCache", "get_method", "method_of"]
