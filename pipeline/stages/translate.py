"""`pipeline translate`: translate sentences with a checkpoint, batched, greedy or beam.

Input: the sentences given as arguments, else the lines of `--file`, else stdin. Each line goes
through the checkpoint's own preprocessing (normalisation, lower-casing, tokenisation, source
vocabulary, reversal: `seq2seq.text.prepare_source`), the batched decoder, and detokenisation.
stdout gets exactly one translation per input line, in order; everything else goes to stderr.

Decisions: no input at all prints nothing and succeeds (like `cat`); an empty or blank line
translates to an empty line without touching the model; a line longer than
`SOURCE_LIMIT_FACTOR` x the longest training source (in tokens) keeps its first
that many tokens, with a warning on stderr, so one runaway line cannot stall a batch.

`--ensemble K` (K > 1) decodes with the sweep's top-K checkpoints, the `top/1..K` folders beside
the `--checkpoint` folder (models/top for models/best; see pipeline/ensembles.py).
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

from pipeline import ui
from pipeline.config import EvaluateConfig
from pipeline.ensembles import load, member_dirs
from pipeline.errors import UserError
from seq2seq.checkpoint import Checkpoint, resolve
from seq2seq.evaluation import DecodeSpec, translate_texts
from seq2seq.text import prepare_source

SOURCE_LIMIT_FACTOR = 4


def read_input(sentences: list[str] | None, input_file: Path | None) -> list[str]:
    """Sentences from the arguments, else the lines of `input_file`, else stdin (UTF-8)."""
    if sentences and input_file is not None:
        raise UserError(
            "both sentences and --file were given", fix="pass sentences or --file, not both"
        )
    if sentences:
        return _checked_arguments(sentences)
    if input_file is None:
        return _decode(sys.stdin.buffer.read(), "standard input").splitlines()
    if input_file.is_dir():
        raise UserError(f"input file {input_file} is a folder", fix="pass --file a text file")
    if not input_file.exists():
        raise UserError(f"input file {input_file} does not exist", fix="check the --file path")
    try:
        data = input_file.read_bytes()
    except OSError as err:
        raise UserError(
            f"input file {input_file} cannot be read ({err.strerror or type(err).__name__})",
            fix="check the --file path and its permissions",
        ) from None
    return _decode(data, f"input file {input_file}").splitlines()


def _decode(data: bytes, name: str) -> str:
    """UTF-8 text without a leading byte-order mark; UserError naming `name` otherwise."""
    try:
        return data.decode("utf-8").removeprefix("\ufeff")
    except UnicodeDecodeError as err:
        raise UserError(
            f"{name} is not UTF-8 text ({err.reason} at byte {err.start})",
            fix="convert it to UTF-8 (e.g. iconv -t utf-8)",
        ) from None


def _checked_arguments(sentences: list[str]) -> list[str]:
    """Arguments as given; one that was not valid UTF-8 (Python keeps its bytes as surrogates)
    is a UserError, not a crash when the output is written."""
    for number, sentence in enumerate(sentences, start=1):
        try:
            sentence.encode("utf-8")
        except UnicodeEncodeError:
            raise UserError(
                f"sentence argument {number} is not UTF-8 text",
                fix="pass UTF-8 text (or use --file with a UTF-8 file)",
            ) from None
    return list(sentences)


def prepare(ckpt: Checkpoint, texts: list[str]) -> list[list[int]]:
    """Texts -> source id lists as the model was trained on (the checkpoint's preprocessing);
    over-long lines cut (warned)."""
    prep = ckpt.preprocessing
    ids = prepare_source(
        texts, lowercase=prep.lowercase, reverse=prep.reverse_source, vocab=ckpt.src_vocab
    )
    limit = SOURCE_LIMIT_FACTOR * max(prep.max_source_tokens, 1)
    for line, seq in enumerate(ids, start=1):
        if len(seq) > limit:
            ui.console.print(
                f"[yellow]warning:[/] line {line} has {len(seq)} tokens; translating its first "
                f"{limit} ({SOURCE_LIMIT_FACTOR} x the longest training source)",
                highlight=False,
            )
            ids[line - 1] = seq[-limit:] if prep.reverse_source else seq[:limit]
    return ids


def _decoding(ckpt: Checkpoint) -> tuple[float, float]:
    """max_len_ratio and length_penalty: the config schema's decoding defaults."""
    defaults = EvaluateConfig()
    return defaults.max_len_ratio, defaults.length_penalty


def run(
    checkpoint: Path,
    sentences: list[str] | None,
    input_file: Path | None,
    *,
    beam_size: int,
    batch_size: int,
    ensemble: int = 1,
) -> None:
    """Translate and print one line per input line to stdout (greedy when beam_size == 1);
    `ensemble` K > 1: with the top-K checkpoints beside `checkpoint`'s folder."""
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    models = resolve(checkpoint).parent.parent  # models/best/checkpoint.pt -> models
    paths = [checkpoint] if ensemble == 1 else member_dirs(models, ensemble, "--ensemble")
    ckpt, model = load(paths, device)  # a bad checkpoint fails before stdin is read
    texts = read_input(sentences, input_file)
    if not texts:
        ui.info("no input sentences: nothing to translate")
        return
    src = prepare(ckpt, texts)
    ratio, alpha = _decoding(ckpt)
    spec = DecodeSpec(beam_size, batch_size, max_len_ratio=ratio, length_penalty=alpha)
    with ui.progress("translating", total=len(src)) as advance:
        out = translate_texts(model, src, ckpt.tgt_vocab, spec, device=device, progress=advance)
    sys.stdout.write("".join(line + "\n" for line in out))
    sys.stdout.flush()
