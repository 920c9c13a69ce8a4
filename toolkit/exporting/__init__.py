"""Export: adapters and merged models as files for other runtimes (GGUF for llama.cpp, ONNX for ONNX Runtime),
the writers of each format, and the runtimes that check them."""
