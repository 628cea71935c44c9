"""The command line's `redumix serve`: its flags, and the check that the `serve` extra is installed."""

from __future__ import annotations

import argparse
import importlib.util
import os

from harness.engine.models import DEFAULT_MODEL, EMBEDDED_MODELS

API_KEY_ENV = "REDUMIX_API_KEY"
INSTALL_HINT = 'pip install ".[serve]"'


def add_parser(sub) -> argparse.ArgumentParser:
    """Add `serve` to the command line's subcommands."""
    from harness.serve.server import DEFAULT_MAX_BODY_BYTES, DEFAULT_PORT, LOOPBACK

    serve = sub.add_parser("serve", help="answer OpenAI-compatible API requests (chat completions, completions) with "
                                         "any decoder; needs pip install \".[serve]\"")
    serve.add_argument("--model", default=DEFAULT_MODEL,
                       help=f"embedded model ({', '.join(EMBEDDED_MODELS)}), a local HF model folder, or a .gguf file")
    serve.add_argument("--decoder", default="greedy",
                       help="the method requests get unless they name one (extra_body decoder); see `redumix list "
                            "decoders`")
    serve.add_argument("--decoder-config", action="append", metavar="KEY=VALUE",
                       help="a parameter of --decoder (repeatable); a request's decoder_config changes it for "
                            "that request")
    serve.add_argument("--host", default=LOOPBACK,
                       help=f"address to listen on (default {LOOPBACK}, this machine only); any other needs --api-key")
    serve.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"port (default {DEFAULT_PORT}; 0: any free one)")
    serve.add_argument("--api-key", metavar="KEY", default=os.environ.get(API_KEY_ENV) or None,
                       help=f"requests must send 'Authorization: Bearer KEY' (default: ${API_KEY_ENV}, else none)")
    serve.add_argument("--served-model-name", metavar="NAME",
                       help="the model's name in requests and /v1/models (default: --model without its folders)")
    serve.add_argument("--dtype", default="auto", help="auto (default), float32, bfloat16 or float16, as for run")
    serve.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or auto")
    serve.add_argument("--seed", type=int, default=0,
                       help="generation seed: a request without `seed` draws from this one, so the same request "
                            "gets the same answer")
    serve.add_argument("--max-new-tokens", type=int, default=256,
                       help="new tokens of a request without max_tokens (default 256; cut to the context window)")
    serve.add_argument("--batch-size", type=int, default=16,
                       help="rows decoded together at most, and requests answered at once (default 16)")
    serve.add_argument("--max-queue", type=int, default=64,
                       help="requests that may wait for the engine; more are answered 429 (default 64)")
    serve.add_argument("--max-n", type=int, default=16, help="largest n (choices per request; default 16)")
    serve.add_argument("--max-body-bytes", type=int, default=DEFAULT_MAX_BODY_BYTES,
                       help=f"largest request body (default {DEFAULT_MAX_BODY_BYTES})")
    serve.add_argument("--drain-timeout", type=float, default=30.0,
                       help="on Ctrl-C or SIGTERM, seconds to go on answering requests in flight (default 30)")
    serve.set_defaults(handler=run_command)
    return serve


def run_command(args: argparse.Namespace) -> int:
    from decoders.registry import parse_key_values

    missing = [name for name in ("fastapi", "uvicorn") if importlib.util.find_spec(name) is None]
    if missing:
        raise ValueError(f"redumix serve needs FastAPI and uvicorn ({', '.join(missing)} not installed); install "
                         f"them with: {INSTALL_HINT}")
    from harness.serve.server import ServeOptions, serve

    options = ServeOptions(
        model=args.model, decoder=args.decoder, decoder_config=parse_key_values(args.decoder_config,
                                                                                "--decoder-config"),
        host=args.host, port=args.port, api_key=args.api_key, dtype=args.dtype, device=args.device, seed=args.seed,
        max_new_tokens=args.max_new_tokens, batch_size=args.batch_size, max_queue=args.max_queue, max_n=args.max_n,
        max_body_bytes=args.max_body_bytes, drain_timeout=args.drain_timeout,
        served_model_name=args.served_model_name, verbose=getattr(args, "verbose", False),
    )
    return serve(options)
