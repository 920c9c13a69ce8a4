"""gpt2-adapt: LoRA adapters for GPT-2-family models, trained from TOML recipes."""

__version__ = "0.1.0"
