"""A saved Hugging Face tokenizer of any family (RoBERTa/XLM-R BPE or SentencePiece, …) behind
nodeprobe's :class:`~nodeprobe.data.tokenizer.Tokenizer` interface.

WordPiece vocabularies (``vocab.txt``: BERT, ELECTRA, DistilBERT) load into nodeprobe's own
:class:`~nodeprobe.data.tokenizer.Tokenizer`; a folder with ``tokenizer.json`` (or RoBERTa's
``vocab.json`` + ``merges.txt``) and no ``vocab.txt`` loads here, through
``transformers.AutoTokenizer`` (a *fast* tokenizer: the Rust backend encodes batches).  The roles
map onto the family's own specials — ``cls_id`` is ``<s>``, ``sep_id`` ``</s>`` for RoBERTa — so
every loader builds ``cls + text + sep`` and a pair ``cls + a + pair_separator + b + sep``
(RoBERTa: ``<s> a </s></s> b </s>``), as the family's tokenizer does.

Example:
    >>> tok = HFTokenizer("runs/my-roberta")              # doctest: +SKIP
    >>> tok.with_specials(tok.encode("hello world"))      # doctest: +SKIP
    [0, 42891, 232, 2]
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

from nodeprobe.data._io import PathLike, as_path
from nodeprobe.data.token_methods import MARKER_TOKENS, TokenizerMethods
from nodeprobe.errors import NodeprobeError

__all__ = ["HFTokenizer", "has_hf_tokenizer"]

_ROLES = ("cls", "sep", "pad", "mask", "unk")


def has_hf_tokenizer(folder: Path) -> bool:
    """Whether ``folder`` holds a saved fast tokenizer (``tokenizer.json``, or ``vocab.json`` + ``merges.txt``)."""
    return (folder / "tokenizer.json").is_file() or ((folder / "vocab.json").is_file()
                                                    and (folder / "merges.txt").is_file())


class HFTokenizer(TokenizerMethods):
    """A saved fast Hugging Face tokenizer with nodeprobe's tokenizer methods and special-id roles.

    Attributes:
        vocab_path: the folder it was loaded from.
        vocab_size: ids (``len`` of the HF tokenizer, added tokens included).
        cls_id, sep_id, pad_id, mask_id, unk_id: the ids of the family's specials in those roles.
        pair_separator: the ids between the two texts of a pair (``[sep]``, or ``[sep, sep]`` for RoBERTa).
        pair_types: whether the second text of a pair has token type 1 (BERT/ELECTRA vocabularies).
        special_ids: every special id (never masked, never a random replacement).
        marker_ids: the FewRel entity markers ``[unused0…3]`` when the vocab has them, else ``None``.
        hf: the ``transformers`` tokenizer; backend: its ``tokenizers.Tokenizer``.
    """

    def __init__(self, folder: PathLike):
        from transformers import AutoTokenizer

        path = as_path(folder, "tokenizer folder")
        self.vocab_path = path
        try:
            hf = AutoTokenizer.from_pretrained(str(path), use_fast=True)
        except Exception as e:  # a broken tokenizer.json / config: one line naming the folder
            raise NodeprobeError(f"{path}: unreadable tokenizer ({type(e).__name__}: "
                                 f"{' '.join(str(e).split())[:160]})") from None
        if not getattr(hf, "is_fast", False):
            raise NodeprobeError(f"{path}: {type(hf).__name__} is not a fast tokenizer; allowed: a folder with "
                                 "tokenizer.json")
        self.hf = hf
        self.backend = hf.backend_tokenizer
        self.backend.no_padding()  # ids of the text alone, whatever tokenizer.json saved
        self.backend.no_truncation()
        ids = {}
        for role in _ROLES:
            i = getattr(hf, f"{role}_token_id", None)
            if i is None and role == "cls":
                i = hf.bos_token_id
            if i is None and role == "sep":
                i = hf.eos_token_id
            if i is None:
                raise NodeprobeError(f"{path}: the tokenizer has no {role} token; allowed: a tokenizer with "
                                     f"{', '.join(_ROLES)} tokens (RoBERTa: <s> </s> <pad> <mask> <unk>)")
            ids[role] = int(i)
        self.cls_id, self.sep_id, self.pad_id = ids["cls"], ids["sep"], ids["pad"]
        self.mask_id, self.unk_id = ids["mask"], ids["unk"]
        self.vocab_size = len(hf)
        self.vocab = hf.get_vocab()
        self.lowercase = bool(getattr(hf, "do_lower_case", False))
        self.special_ids = frozenset(int(i) for i in hf.all_special_ids) | frozenset(ids.values())
        markers = [self.vocab.get(m) for m in MARKER_TOKENS]  # a WordPiece vocab saved as tokenizer.json has them
        self.marker_ids = tuple(markers) if all(m is not None for m in markers) else None
        self.pair_separator, self.pair_types = self._pair_template()

    def _pair_template(self) -> tuple[list[int], bool]:
        """The specials the tokenizer's own post-processor puts between the two texts of a pair, and
        whether it gives the second text token type 1 (BERT/ELECTRA: yes; RoBERTa: no)."""
        try:
            e = self.backend.encode("a", "b", add_special_tokens=True)
            seq = e.sequence_ids
            last_a = max(i for i, s in enumerate(seq) if s == 0)
            first_b = min(i for i, s in enumerate(seq) if s == 1)
            return [int(i) for i in e.ids[last_a + 1: first_b]], any(t == 1 for t in e.type_ids)
        except Exception:  # no pair template: BERT's layout
            return [self.sep_id], True

    # ----------------------------------------------------------------- encoding
    # encode, encode_batch, with_specials, convert_tokens_to_ids, token_to_id: TokenizerMethods
    def encode_words_batch(self, sentences: Sequence[Sequence[str]]) -> list[list[list[int]]]:
        """Word-by-word ids: ``out[s][w]`` = pieces of word ``w`` of sentence ``s`` (each word after
        a space, as inside a sentence)."""
        uniq = list(dict.fromkeys(w for s in sentences for w in s))
        table = dict(zip(uniq, self.encode_batch([" " + w for w in uniq]))) if uniq else {}
        return [[list(table[w]) for w in s] for s in sentences]

    # ------------------------------------------------------------- conversion
    def convert_ids_to_tokens(self, ids: Iterable[int]) -> list[str]:
        """Token strings of ``ids`` (an id outside ``[0, V)`` raises :class:`NodeprobeError`)."""
        out = []
        for i in ids:
            i = int(i)
            if not 0 <= i < self.vocab_size:
                raise NodeprobeError(f"token id {i}: outside the vocab of {self.vocab_path} "
                                     f"(allowed 0–{self.vocab_size - 1})")
            out.append(self.hf.convert_ids_to_tokens(i))
        return out

    def decode(self, ids: Iterable[int], skip_special_tokens: bool = False) -> str:
        """Text of ``ids``."""
        return self.hf.decode([int(i) for i in ids], skip_special_tokens=skip_special_tokens)

    def __repr__(self) -> str:
        return (f"HFTokenizer({str(self.vocab_path)!r}, {type(self.hf).__name__}, vocab_size={self.vocab_size}, "
                f"cls={self.cls_id}, sep={self.sep_id}, pad={self.pad_id}, mask={self.mask_id}, unk={self.unk_id})")

    def save_pretrained(self, directory: PathLike) -> Path:
        """Write the tokenizer files into ``directory`` (created), as ``transformers`` saves them."""
        d = as_path(directory, "tokenizer directory")
        try:
            d.mkdir(parents=True, exist_ok=True)
            self.hf.save_pretrained(str(d))
        except OSError as e:
            raise NodeprobeError(f"{d}: cannot write the tokenizer files ({e.strerror or e})") from e
        return d
