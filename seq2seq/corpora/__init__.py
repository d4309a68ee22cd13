"""Corpus sources: the generated `sample` corpus, Multi30k, Tatoeba/Anki and local/remote files."""
