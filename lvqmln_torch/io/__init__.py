"""Layer 4, files and other runtimes (built on the layers below): checkpoints read safely,
export (torch.export, TorchScript, ONNX) and conversion to and from the JAX reference."""
