"""The model: precision, tokenizer, base weights (full precision or quantized), LoRA through peft, the
chunked output-layer loss, the fingerprints that identify a base and a tokenizer, and the adapters on a model
in memory: which one runs, their mixes, and how each is prompted."""
