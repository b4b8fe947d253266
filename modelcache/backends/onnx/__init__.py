"""The ONNX Runtime backend: the encoder (no torch at run time) and the verified export cache."""
