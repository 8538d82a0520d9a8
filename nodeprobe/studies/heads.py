"""Head studies on texts: run a model, collect patterns / head vectors, call the pure analyses.

* :func:`study_heads` — attention to separators and context similarity over a list of texts
  (:mod:`nodeprobe.analysis.similarity`), batched; returns a :class:`HeadStudy`.
* :func:`segment` — split one text with the separator-focused heads; a :class:`SegmentReport`.
* :func:`head_matrix` — one head's ``[P, P]`` similarity matrix over one text (for the heat map).

A *text* is a string (encoded as ``[CLS] … [SEP]``, cut at ``max_len``) or a list of token ids
used as given (e.g. the held-out ``[CLS] … [SEP]`` sequences of the pre-training corpus).

Example:
    >>> model, tok = load_with_tokenizer("runs/cpu/pretrain/final", "mlm")          # doctest: +SKIP
    >>> st = study_heads(model, tok, ["The cat sat. The dog ran!"])           # doctest: +SKIP
    >>> st.separators.separator_blocks, st.similarity.blocks[0].uniqueness    # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from nodeprobe.analysis.similarity import (
    VECTOR_SITES,
    Segmentation,
    SeparatorAttention,
    SimilarityResult,
    context_similarity,
    merge_separator_attention,
    merge_similarity,
    segment_text,
    separator_attention,
    similarity_matrix,
)
from nodeprobe.errors import NodeprobeError

PUNCT = (".", "!", "?")


def separator_ids(tokenizer) -> dict:
    """``{"sep", "cls", "pad", "punct"}`` ids of a tokenizer (punctuation present in its vocab)."""
    punct = tuple(i for i in (tokenizer.token_to_id(p) for p in PUNCT) if i is not None)
    return {"sep": tokenizer.sep_id, "cls": tokenizer.cls_id, "pad": tokenizer.pad_id, "punct": punct}


def encode_texts(tokenizer, texts: Sequence[str | Sequence[int]], max_len: int = 128) -> list[list[int]]:
    """Token ids of each text: strings → ``[CLS] … [SEP]`` (cut at ``max_len``); id lists as given."""
    if isinstance(texts, str):
        texts = [texts]
    out = []
    for t in texts:
        if isinstance(t, str):
            if not t.strip():
                continue
            out.append(tokenizer.with_specials(tokenizer.encode(t), max_len))
        else:
            ids = [int(i) for i in t][:max_len]
            if ids:
                out.append(ids)
    if not out:
        raise NodeprobeError("no text given (all texts are empty)")
    return out


def _max_len(model, max_len: int | None) -> int:
    m = min(128, model.spec.max_len) if max_len is None else int(max_len)
    if m < 2 or m > model.spec.max_len:
        raise NodeprobeError(f"max_len={max_len}: expected 2–{model.spec.max_len}")
    return m


@torch.no_grad()
def collect(model, input_ids: torch.Tensor, attention_mask: torch.Tensor, names: Sequence[str]) -> dict[str, torch.Tensor]:
    """Run the encoder (no task head) and return the named hook tensors on CPU (float32)."""
    dev = next(model.parameters()).device
    model.eval()
    wanted = set(names)
    _, cache = model.run_with_cache(input_ids.to(dev), attention_mask=attention_mask.to(dev),
                                    stop_at_layer=model.spec.n_layers, names_filter=lambda n: n in wanted)
    return {n: cache[n].detach().float().cpu() for n in names}


def _site_names(site: str, L: int) -> tuple[list[str], list[str] | None]:
    if site not in VECTOR_SITES:
        raise NodeprobeError(f"site={site}: expected one of {', '.join(VECTOR_SITES)}")
    if site == "qk":
        return [f"blocks.{l}.attn.hook_q" for l in range(L)], [f"blocks.{l}.attn.hook_k" for l in range(L)]
    return [f"blocks.{l}.attn.hook_{site}" for l in range(L)], None


@dataclass
class HeadStudy:
    """Separator attention and context similarity of a model over some texts."""

    n_texts: int
    n_tokens: int
    separators: SeparatorAttention
    similarity: SimilarityResult
    token_names: dict[int, str]  # names of the top tokens (and separator ids)
    settings: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"n_texts": self.n_texts, "n_tokens": self.n_tokens, "separators": self.separators.to_dict(),
                "similarity": self.similarity.to_dict(), "token_names": self.token_names,
                "settings": self.settings}


def study_heads(
    model,
    tokenizer,
    texts: Sequence[str | Sequence[int]],
    *,
    site: str = "z",
    q: float = 0.99,
    long_range: int = 16,
    normalize: bool = False,
    skip_special: bool = True,
    threshold: float = 0.3,
    batch_size: int = 16,
    max_len: int | None = None,
) -> HeadStudy:
    """Attention to separators and context similarity of every head over ``texts``.

    Args:
        model: a :class:`~nodeprobe.model.HookedBert` (any task; only the encoder runs).
        tokenizer: its tokenizer (separator and punctuation ids, encoding of strings).
        texts: strings or token-id lists (see the module docstring).
        site: vectors compared: ``z`` (head outputs, default), ``q``, ``k``, ``v`` or ``qk`` (q_i·k_j).
        q, long_range, normalize, skip_special: see :func:`~nodeprobe.analysis.similarity.context_similarity`.
        threshold: separator-focused heads / blocks have a separator share above this.
        batch_size: texts per forward pass.

    Returns:
        A :class:`HeadStudy`: ``.separators`` (:class:`SeparatorAttention`, ``[L, H]`` shares,
        ``separator_blocks``, ``separator_heads``), ``.similarity`` (:class:`SimilarityResult`,
        per head ``heads[l][h]`` and per block ``blocks[l]`` summaries), ``.token_names``.
    """
    from nodeprobe.data.batching import collate

    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise NodeprobeError(f"batch_size={batch_size}: expected a positive integer")
    L = model.spec.n_layers
    seqs = encode_texts(tokenizer, texts, _max_len(model, max_len))
    ids_ = separator_ids(tokenizer)
    vec_names, key_names = _site_names(site, L)
    pat_names = [f"blocks.{l}.attn.hook_pattern" for l in range(L)]
    names = pat_names + vec_names + (key_names or [])
    seps, sims = [], []
    for b0 in range(0, len(seqs), batch_size):
        batch = collate(seqs[b0 : b0 + batch_size], pad_id=ids_["pad"])
        ids, mask = batch["input_ids"], batch["attention_mask"]
        acts = collect(model, ids, mask, names)
        seps.append(separator_attention([acts[n] for n in pat_names], ids, mask, sep_id=ids_["sep"],
                                        cls_id=ids_["cls"], punct_ids=ids_["punct"], threshold=threshold))
        sims.append(context_similarity(
            [acts[n] for n in vec_names], ids, mask, keys=[acts[n] for n in key_names] if key_names else None,
            ender_ids=(*ids_["punct"], ids_["sep"]), special_ids=(ids_["cls"], ids_["sep"], ids_["pad"]),
            q=q, long_range=long_range, normalize=normalize, skip_special=skip_special, site=site))
    sep = merge_separator_attention(seps)
    sim = merge_similarity(sims)
    named = {t for b in sim.blocks for t in b.top_tokens if t is not None}
    named |= {ids_["sep"], ids_["cls"], *ids_["punct"]}
    names_map = dict(zip(sorted(named), tokenizer.convert_ids_to_tokens(sorted(named))))
    settings = {"site": site, "q": q, "long_range": long_range, "normalize": normalize,
                "skip_special": skip_special, "threshold": threshold, "punct": list(PUNCT)}
    return HeadStudy(n_texts=len(seqs), n_tokens=int(sum(len(s) for s in seqs)), separators=sep,
                     similarity=sim, token_names=names_map, settings=settings)


@dataclass
class SegmentReport:
    """One text split into segments by separator-focused heads."""

    tokens: list[str]
    segmentation: Segmentation
    segment_texts: list[str]
    separators: SeparatorAttention
    heads_from: str  # "given" or "separator-focused (share > threshold)"

    def to_dict(self) -> dict:
        return {"tokens": self.tokens, "segmentation": self.segmentation.to_dict(),
                "segment_texts": self.segment_texts, "separators": self.separators.to_dict(),
                "heads_from": self.heads_from}


def segment(
    model,
    tokenizer,
    text: str | Sequence[int],
    *,
    heads: Sequence[tuple[int, int]] | None = None,
    threshold: float = 0.3,
    min_ratio: float = 3.0,
    max_len: int | None = None,
) -> SegmentReport:
    """Segment one text (see :func:`nodeprobe.analysis.similarity.segment_text` for the rule).

    ``heads=None`` uses the heads whose separator share on this text exceeds ``threshold``.
    """
    seq = encode_texts(tokenizer, [text], _max_len(model, max_len))[0]
    ids = torch.tensor([seq])
    mask = torch.ones_like(ids)
    L = model.spec.n_layers
    pat_names = [f"blocks.{l}.attn.hook_pattern" for l in range(L)]
    acts = collect(model, ids, mask, pat_names)
    sid = separator_ids(tokenizer)
    sep = separator_attention([acts[n] for n in pat_names], ids, mask, sep_id=sid["sep"], cls_id=sid["cls"],
                              punct_ids=sid["punct"], threshold=threshold)
    if heads is None:
        heads_from = f"separator-focused (share > {threshold:g})"
        chosen = sep.separator_heads
        if not chosen:
            best = max(sep.share.max(), 0.0)
            raise NodeprobeError(f"no separator-focused head on this text (largest share {best:.3f} ≤ "
                                 f"threshold={threshold:g}); lower `threshold` or give `layer`/`head`")
    else:
        heads_from = "given"
        chosen = tuple(heads)
        for l, h in chosen:
            model.spec.check_layer(l)
            model.spec.check_head(h)
    seg = segment_text([acts[n] for n in pat_names], ids, chosen, min_ratio=min_ratio,
                       special_ids=(sid["cls"], sid["sep"], sid["pad"]))
    toks = tokenizer.convert_ids_to_tokens(seq)
    texts = [tokenizer.decode(seq[s:e], skip_special_tokens=True) for s, e in seg.segments]
    return SegmentReport(tokens=toks, segmentation=seg, segment_texts=texts, separators=sep, heads_from=heads_from)


def head_matrix(model, tokenizer, text: str | Sequence[int], layer: int, head: int, *, site: str = "z",
                normalize: bool = False, max_len: int | None = None) -> tuple[np.ndarray, list[str]]:
    """``([P, P] similarity matrix of head (layer, head) over the text, token strings)``."""
    model.spec.check_layer(layer)
    model.spec.check_head(head)
    seq = encode_texts(tokenizer, [text], _max_len(model, max_len))[0]
    ids = torch.tensor([seq])
    vec_names, key_names = _site_names(site, model.spec.n_layers)
    names = [vec_names[layer]] + ([key_names[layer]] if key_names else [])
    acts = collect(model, ids, torch.ones_like(ids), names)
    v = acts[names[0]][0, :, head]
    k = acts[names[1]][0, :, head] if key_names else None
    return similarity_matrix(v, k, normalize=normalize), tokenizer.convert_ids_to_tokens(seq)
