"""The tokenizer methods that read only a ``tokenizers`` backend and the special ids, shared by
nodeprobe's WordPiece :class:`~nodeprobe.data.tokenizer.Tokenizer` and the
:class:`~nodeprobe.data.hf_tokenizer.HFTokenizer` of any other saved fast tokenizer.

Example:
    >>> tok = load_tokenizer("vocab.txt")                         # doctest: +SKIP
    >>> tok.with_specials(tok.encode("a cat"), max_len=3)         # doctest: +SKIP
    [101, 1037, 102]
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from nodeprobe.errors import NodeprobeError

#: entity markers (head start, head end, tail start, tail end) used by the FewRel loader.
MARKER_TOKENS = ("[unused0]", "[unused1]", "[unused2]", "[unused3]")


class TokenizerMethods:
    """Mixin: needs ``backend`` (a ``tokenizers.Tokenizer``), ``vocab`` (token → id), ``vocab_size``
    and ``cls_id``, ``sep_id``, ``unk_id``."""

    def encode(self, text: str) -> list[int]:
        """Token ids of ``text`` without the specials ([CLS]/[SEP], <s>/</s>): ``Int[list, "n"]``.

        Example:
            >>> tok.encode("Hello, world!")  # doctest: +SKIP
            [7592, 1010, 2088, 999]
        """
        return self.backend.encode(text, add_special_tokens=False).ids

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        """:meth:`encode` for many texts at once (parallel in Rust): ``list[Int[list, "n_i"]]``.

        Example:
            >>> tok.encode_batch(["a", "b c"])  # doctest: +SKIP
            [[1037], [1038, 1039]]
        """
        if not texts:
            return []
        # encode_batch_fast (tokenizers ≥ 0.20) skips character offsets: same ids, ~2× faster
        encode = getattr(self.backend, "encode_batch_fast", self.backend.encode_batch)
        return [e.ids for e in encode(list(texts), add_special_tokens=False)]

    def with_specials(self, ids: Sequence[int], max_len: int | None = None) -> list[int]:
        """``[CLS] + ids + [SEP]``, keeping the first ``max_len − 2`` ids if ``max_len`` is set.

        Example:
            >>> tok.with_specials([7592, 2088], max_len=3)  # doctest: +SKIP
            [101, 7592, 102]
        """
        ids = list(ids)
        if max_len is not None:
            if max_len < 2:
                raise NodeprobeError(f"max_len={max_len}: must be ≥ 2 (room for [CLS] and [SEP])")
            ids = ids[: max_len - 2]
        return [self.cls_id, *ids, self.sep_id]

    def convert_tokens_to_ids(self, tokens: Iterable[str]) -> list[int]:
        """Ids of vocab tokens; a token not in the vocab maps to ``unk_id``.

        Example:
            >>> tok.convert_tokens_to_ids(["[MASK]", "hello", "zzzzq"])  # doctest: +SKIP
            [103, 7592, 100]
        """
        return [self.vocab.get(t, self.unk_id) for t in tokens]

    def token_to_id(self, token: str) -> int | None:
        """Id of ``token`` or ``None``.

        Example:
            >>> tok.token_to_id("[unused0]"), tok.token_to_id("no-such-token")  # doctest: +SKIP
            (1, None)
        """
        return self.vocab.get(token)

    def __len__(self) -> int:
        return self.vocab_size

