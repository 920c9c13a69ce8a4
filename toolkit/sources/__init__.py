"""Where models and datasets come from: a builtin, a local folder, or the Hugging Face Hub."""
