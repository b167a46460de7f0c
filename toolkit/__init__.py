"""Shared code of the toolkit: Hugging Face model -> ONNX precision variants -> engines -> Triton repository."""
