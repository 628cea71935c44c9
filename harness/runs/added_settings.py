"""Decoder settings added after a folder was written, read back at their defaults.

A decoder setting is only ever added with a default that decodes as before it existed
(ReDuMix's `min_p` is 0: no min-p filtering, as stage 4 did before it had one). A spec.json
written before the setting holds records of exactly that default, so reading it with the
setting filled in at its default lets the folder resume under a config that leaves the
setting alone, and still refuses one that sets it to anything else.
"""

from __future__ import annotations

import json


def with_added_settings(spec: dict) -> dict:
    """`spec` (spec.json's content) with every decoder config missing a setting its decoder now
    has given that setting's default: the run's `decoder_config`, each sweep decoder's
    `resolved_config`. Decoders no longer known, and malformed entries, are left as they are."""
    run = spec.get("run")
    if isinstance(run, dict):
        return spec | {"run": _filled(run, "decoder", "decoder_config")}
    sweep = spec.get("sweep")
    if isinstance(sweep, dict) and isinstance(sweep.get("decoders"), list):
        return spec | {"sweep": sweep | {"decoders": [_filled(d, "name", "resolved_config")
                                                      for d in sweep["decoders"]]}}
    return spec


def _filled(entry, name_key: str, config_key: str):
    if not isinstance(entry, dict) or not isinstance(entry.get(config_key), dict):
        return entry
    defaults = _default_config(entry.get(name_key))
    config = entry[config_key]
    return entry | {config_key: config | {k: v for k, v in defaults.items() if k not in config}}


def _default_config(name) -> dict:
    """Decoder `name`'s `config()` with every setting at its default, as JSON stores it ({} if unknown)."""
    from decoders import get_decoder

    if not isinstance(name, str):
        return {}
    try:
        return json.loads(json.dumps(get_decoder(name).config()))
    except (ValueError, TypeError):
        return {}
