"""One module per DVC stage (plus train, translate): load inputs, call seq2seq/, write outputs."""
