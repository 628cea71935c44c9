"""Pluggable decoders behind one small interface (see decoders.base)."""

from decoders.base import Decoder, Step
from decoders.registry import available_decoders, get_decoder, register_decoder

__all__ = ["Decoder", "Step", "available_decoders", "get_decoder", "register_decoder"]
