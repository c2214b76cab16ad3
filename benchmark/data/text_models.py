"""Tiny frozen T5 text encoders for the embedded synthetic default, saved in their real formats.

:func:`build_tiny_t5` trains a SentencePiece unigram model on a caption corpus and writes a
Hugging Face folder (``spiece.model``, ``tokenizer.json``, ``tokenizer_config.json``,
``config.json``, ``model.safetensors``) that loads with ``T5Tokenizer.from_pretrained`` and
``T5EncoderModel.from_pretrained`` exactly like a real T5 checkpoint, so the embedded default
exercises the same loading code as real weights.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import tempfile
import uuid
from pathlib import Path

import torch

__all__ = ["SYNTHETIC_T5_NAME", "build_tiny_t5", "synthetic_text_dir"]

SYNTHETIC_T5_NAME = "t5-tiny-v1"
PAD_ID, EOS_ID, UNK_ID = 0, 1, 2
MODEL_MAX_LENGTH = 512  # as t5-small


def _train_spiece(corpus: list[str], vocab_size: int) -> bytes:
    import sentencepiece as spm

    # SentencePiece seeds its unigram vocabulary with right-branching repeated substrings. In a
    # templated corpus a word such as "medium" is always followed by a space, so it never becomes
    # a seed and ends up spelled letter by letter. Adding every word once as its own sentence
    # gives each word a second right context, so whole words become pieces.
    words = sorted({w.strip(",.;:") for line in corpus for w in line.split()} - {""})
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(list(corpus) + words),
        model_writer=model,
        model_type="unigram",
        vocab_size=vocab_size,
        hard_vocab_limit=False,  # a small corpus may support fewer pieces than asked for
        pad_id=PAD_ID,
        eos_id=EOS_ID,
        unk_id=UNK_ID,
        bos_id=-1,
        character_coverage=1.0,
        num_threads=1,
        minloglevel=2,
    )
    return model.getvalue()


def _encode(tokenizer, texts: list[str]) -> dict[str, torch.Tensor]:
    return tokenizer(texts, padding=True, return_tensors="pt")


def build_tiny_t5(
    folder: str | Path,
    corpus: list[str],
    vocab_size: int = 128,
    d_model: int = 64,
    layers: int = 2,
    heads: int = 4,
    seed: int = 0,
) -> Path:
    """Build a tiny randomly initialised T5 encoder + SentencePiece tokenizer in ``folder``.

    Returns ``folder`` (a Path). If ``folder/config.json`` exists, returns at once without
    touching anything. The folder is written under a temporary name beside it and renamed into
    place only after verification, so a concurrent or killed build never leaves a partial folder.
    The model vocabulary is the SentencePiece model's actual size (at most ``vocab_size``).
    """
    folder = Path(folder)
    if (folder / "config.json").exists():
        return folder
    corpus = [str(c) for c in corpus]
    if not corpus:
        raise ValueError("build_tiny_t5 needs a non-empty corpus")
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # "Writing model shards" bars would clutter the first run
    if d_model % heads:
        raise ValueError(f"d_model ({d_model}) must be divisible by heads ({heads})")

    from transformers import T5Config, T5EncoderModel, T5Tokenizer

    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}-", dir=folder.parent))
    try:
        os.chmod(tmp, 0o755)  # mkdtemp makes it private; the cache folder should not be
        (tmp / "spiece.model").write_bytes(_train_spiece(corpus, vocab_size))
        tokenizer = T5Tokenizer.from_pretrained(
            str(tmp), extra_ids=0, legacy=False, model_max_length=MODEL_MAX_LENGTH
        )
        tokenizer.save_pretrained(str(tmp))
        n_vocab = len(tokenizer)

        config = T5Config(
            vocab_size=n_vocab,
            d_model=d_model,
            d_kv=d_model // heads,
            d_ff=2 * d_model,
            num_layers=layers,
            num_heads=heads,
            dropout_rate=0.0,
            decoder_start_token_id=PAD_ID,
            pad_token_id=PAD_ID,
            eos_token_id=EOS_ID,
        )
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = T5EncoderModel(config)
        model.eval()
        model.save_pretrained(str(tmp))

        # -- verify the on-disk folder against the in-memory objects ----------------------
        probe = corpus[: min(8, len(corpus))]
        reloaded_tok = T5Tokenizer.from_pretrained(str(tmp))
        enc = _encode(reloaded_tok, probe)
        if not torch.equal(enc["input_ids"], _encode(tokenizer, probe)["input_ids"]):
            raise RuntimeError("reloaded tokenizer encodes differently from the built one")
        if (enc["input_ids"] == UNK_ID).any():
            bad = [p for p, ids in zip(probe, enc["input_ids"]) if (ids == UNK_ID).any()]
            raise RuntimeError(f"tokenizer produces <unk> on corpus captions: {bad[:3]}")
        if int(enc["input_ids"].max()) >= n_vocab:
            raise RuntimeError("token id outside the model vocabulary")
        reloaded = T5EncoderModel.from_pretrained(str(tmp)).eval()
        with torch.no_grad():
            a = model(**enc).last_hidden_state
            b = reloaded(**enc).last_hidden_state
        if not torch.equal(a, b):
            raise RuntimeError("reloaded T5 encoder gives different outputs from the built one")

        (tmp / "build_info.json").write_text(
            json.dumps(
                {
                    "builder": "benchmark.data.text_models.build_tiny_t5",
                    "corpus_size": len(corpus),
                    "requested_vocab_size": vocab_size,
                    "vocab_size": n_vocab,
                    "d_model": d_model,
                    "layers": layers,
                    "heads": heads,
                    "seed": seed,
                },
                indent=2,
            )
            + "\n"
        )
        try:
            os.rename(tmp, folder)  # atomic; also replaces an existing empty directory
        except OSError:
            if (folder / "config.json").exists():  # a concurrent build won the race
                return folder
            raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return folder


def synthetic_text_dir(cache_root: str | Path) -> Path:
    """``cache_root/synthetic/t5-tiny-v1``: the tiny T5 for synthetic captions, built if missing."""
    from benchmark.data.synthetic import caption_corpus

    folder = Path(cache_root) / "synthetic" / SYNTHETIC_T5_NAME
    if (folder / "config.json").exists():
        return folder
    return build_tiny_t5(folder, caption_corpus())
