"""streamcli's training and development tools, a distribution of their own (``streamcli-tools``) so the
runtime wheel carries none of them.

- :mod:`streamcli_tools.train`: torch only: the Whisper teacher and streaming student, our wctc model,
  their ONNX exports (``streamcli export`` runs :func:`streamcli_tools.train.export.run_export`),
  training-data helpers;
- :mod:`streamcli_tools.devtools`: the random-weight test zipformer, the sherpa-onnx parity run,
  synthetic speech and its text corpus (tests and scripts).
"""
