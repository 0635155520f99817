"""The LLM engine (vLLM ``AsyncLLM``), model resolution, quantization and prompts."""
