"""Name -> method. Every registered decoder is a method (`SinglePass` around it, or, for a
decoder that is the config of a multi-stage method, that method); unknown names get a
did-you-mean from the decoder registry."""

from __future__ import annotations

from typing import Any

from decoders import get_decoder
from harness.methods.base import Method
from harness.methods.dera import DeRaMethod
from harness.methods.redumix import ReDuMixMethod
from harness.methods.self_consistency import SelfConsistencyMethod
from harness.methods.single_pass import SinglePass

# Decoder configs that run as methods of their own (several stages, several models); every other
# decoder runs as a SinglePass.
MULTI_STAGE: dict[str, type] = {"redumix": ReDuMixMethod, "self_consistency": SelfConsistencyMethod,
                                 "dera": DeRaMethod}


def get_method(name: str, **config: Any) -> Method:
    """The method `name` with `config` (string values parsed; errors name the parameter and the fix)."""
    decoder = get_decoder(name, **config)
    return method_of(decoder)


def method_of(decoder) -> Method:
    """The method that runs an already built decoder."""
    return MULTI_STAGE.get(decoder.name, SinglePass)(decoder)
