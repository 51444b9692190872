"""Development tools (the test extra): a random-weight test zipformer, the parity run against
sherpa-onnx, synthetic speech. The scripts/ of the same names are their command lines; nothing of the
runtime imports this package."""
