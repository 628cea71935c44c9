"""ReDuMix, the reflective dual-context mixture, as a method: stages 1-3, compression and the method."""

from harness.methods.redumix.method import ReDuMixMethod, stage_cache

__all__ = ["ReDuMixMethod", "stage_cache"]
