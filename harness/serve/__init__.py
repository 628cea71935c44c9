"""`redumix serve`: every method behind an OpenAI-compatible API.

`protocol` reads and checks request bodies and writes the OpenAI response shapes; `batcher`
is the request queue and the one worker thread that owns the models, answering the requests
that queued while it was busy together in its next engine call; `app` is the FastAPI
application; `server` loads the models, checks the address and runs uvicorn until Ctrl-C or
SIGTERM; `command` is the command line's `serve` subcommand. FastAPI and uvicorn come with
the `serve` extra (pip install ".[serve]"); nothing here imports them until the server starts.
"""
