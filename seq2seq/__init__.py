"""The seq2seq library: corpora, polars text processing, vocabularies, batching, the LSTM
encoder-decoder, the training step, batched greedy/beam decoding, metrics and checkpoints.

It never reads params.yaml, argv or environment variables and never imports ray or mlflow:
functions take typed arguments and return values.
"""
