"""Evaluation defaults: the one source. The decoding ones: seq2seq.search, DecodeSpec and the
pipeline's EvaluateConfig (hence `pipeline translate` and the evaluate stage) derive from them.
LOSS_BATCH_PAIRS: seq2seq.training.fit's validation loss and the evaluate stage's test loss
(decoding's rows do not batch the losses). Kept free of heavy imports so that loading the
config stays cheap."""

DEFAULT_BATCH_ROWS = 1024  # decoder rows per batch: sentences x beam size
LOSS_BATCH_PAIRS = 256  # sentence pairs per batch of a teacher-forced (validation, test) loss
DEFAULT_MAX_LEN_RATIO = 2.0  # decode up to ratio x source length + 10 tokens
DEFAULT_LENGTH_PENALTY = 1.0  # finished beam hypotheses are ranked by log-prob / len**this
