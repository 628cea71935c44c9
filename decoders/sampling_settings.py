"""The one set of token-sampling settings every sampling decoder and stage uses.

`SamplingSettings(temperature, top_k, top_p, min_p)` is validated here and only here, and
turns log-probs into a drawn token with `decoders.sampling`'s pure functions. Decoder
configs keep these settings as their own flat fields (`temperature=0.7`, ReDuMix's
`stage1_top_p`, ...: what the command line, sweep configs and `config()` name) and expose
them as a `SamplingSettings` property built with `SamplingSettings.of(config, prefix)`, which
each config reads once in `__post_init__`: a wrong value is refused when the config is made,
under the name the user gave it. Nothing is stored beside the fields, so `config()`,
equality and `dataclasses.replace` see the configs as before.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import InitVar, dataclass
from typing import Any

import torch
from torch import Tensor

from decoders.sampling import draw, filter_logprobs

# The settings, in the order decoders declare them; a config holds them as `prefix + name`.
NAMES = ("temperature", "top_k", "top_p", "min_p")
# The fix named when a temperature is not > 0, for a decoder that has no `sample` switch.
GREEDY_DECODER = "for deterministic decoding use decoder 'greedy'"


def check_temperature(temperature: float, prefix: str = "", fix: str = GREEDY_DECODER) -> None:
    """Refuse a temperature that is not > 0, naming the parameter and `fix`."""
    if not temperature > 0:
        raise ValueError(f"{prefix}temperature (={temperature}) must be > 0; {fix}")


def check_truncation(top_k: int, top_p: float, min_p: float, prefix: str = "") -> None:
    """Refuse truncation settings `filter_logprobs` cannot apply, naming the parameter and the fix."""
    if top_k < 0:
        raise ValueError(f"{prefix}top_k (={top_k}) must be >= 0; use 0 to keep every token")
    if not 0.0 < top_p <= 1.0:
        raise ValueError(f"{prefix}top_p (={top_p}) must be in (0, 1]; use 1.0 to turn it off")
    if not 0.0 <= min_p < 1.0:
        raise ValueError(f"{prefix}min_p (={min_p}) must be in [0, 1); use 0 to turn it off")


@dataclass(frozen=True)
class SamplingSettings:
    """Temperature, then top-k, top-p and min-p (relative to the top probability), then a draw.

    The defaults change nothing: temperature 1, and top_k 0, top_p 1.0 and min_p 0.0 each
    keep every token. `prefix` and `temperature_fix` only word the errors (they are not
    stored): `prefix` is how the owning config names the settings ("stage1_" for
    `stage1_temperature`, ...), `temperature_fix` what to do instead of a temperature <= 0.
    """

    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    min_p: float = 0.0
    prefix: InitVar[str] = ""
    temperature_fix: InitVar[str] = GREEDY_DECODER

    def __post_init__(self, prefix: str, temperature_fix: str) -> None:
        check_temperature(self.temperature, prefix, temperature_fix)
        check_truncation(self.top_k, self.top_p, self.min_p, prefix)

    @classmethod
    def of(cls, config: Any, prefix: str = "", temperature_fix: str = GREEDY_DECODER) -> SamplingSettings:
        """The settings `config` holds as the fields `{prefix}temperature`, `{prefix}top_k`, ...

        Raises:
            ValueError: a value out of range, named as `config` names it.
        """
        return cls(*(getattr(config, prefix + name) for name in NAMES), prefix=prefix,
                   temperature_fix=temperature_fix)

    def fields(self, prefix: str = "") -> dict[str, Any]:
        """{`prefix` + name: value} of the four settings, in their order."""
        return {prefix + name: getattr(self, name) for name in NAMES}

    def filter(self, logprobs: Tensor) -> Tensor:
        """(B, V) log-probs -> (B, V) renormalised log-probs after temperature and truncation."""
        return filter_logprobs(logprobs, self.temperature, self.top_k, self.top_p, self.min_p)

    def draw(self, logprobs: Tensor, rngs: Sequence[torch.Generator]) -> Tensor:
        """(B, V) log-probs -> (B,) token ids, drawn from the filtered distribution with each row's generator."""
        return draw(self.filter(logprobs), rngs)


def greedy_at_zero(config: Any, prefix: str, temperature_fix: str) -> SamplingSettings | None:
    """Settings whose temperature 0 means greedy (the soft decoders' answer phase): None for
    greedy, else the `SamplingSettings` of `config`'s `{prefix}...` fields. The truncation
    settings are checked either way.

    Raises:
        ValueError: a negative temperature (the message ends with `temperature_fix`), or a
            truncation setting out of range.
    """
    temperature = getattr(config, prefix + "temperature")
    if temperature < 0:
        raise ValueError(f"{prefix}temperature (={temperature}) must be >= 0; {temperature_fix}")
    if temperature == 0:
        check_truncation(*(getattr(config, prefix + name) for name in NAMES[1:]), prefix=prefix)
        return None
    return SamplingSettings.of(config, prefix)
