"""One module per DVC stage (plus train and translate): load inputs, call seq2seq/, write outputs."""
