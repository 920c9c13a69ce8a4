"""The model: precision, tokenizer, base weights (full precision or quantized), LoRA through peft, the
chunked output-layer loss, and the fingerprints that identify a base and a tokenizer."""
