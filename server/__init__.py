"""The nqec gRPC decoding service: ONNX + PyMatching, micro-batching, fallback, health, metrics.

Never imports torch or the training code.
"""
