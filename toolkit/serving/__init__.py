"""The server: every adapter in the store behind one OpenAI-compatible endpoint, batched across adapters.

    app = toolkit.create_app(store="adapters")      # an ASGI app, for uvicorn or any ASGI server
    toolkit.serve(store="adapters", port=8000)      # the same, run by uvicorn until SIGTERM or Ctrl-C

`settings` (what the command line sets), `types` (requests and responses), `catalog` (what the store
offers and what a request's `model` names), `registry` (which adapters are loaded on the one base),
`engine` (one batched forward pass at a time over rows that each have their own adapter), `sampling` and
`text` (a row's next token, and its text as it grows), `jobs` (what travels between the event loop and
the worker), `batcher` (the worker thread that owns the model and runs the engine), `completions` (a
request into rows, rows into a response or a stream), `service` (what a running server holds), `errors`,
`metrics`, `access`, `auth`, `app` (the routes, thin) and `server` (uvicorn, signals).
"""
