"""Tiny random encoders of every supported family, with offline tokenizers (fp32, eval mode, seeded).

Families (``FAMILIES``) × kinds (``KINDS``: ``mlm`` / ``cls`` / ``base``), each built in a few ms:

==================  ===============================================  =====================================
family              HF classes                                       tokenizer
==================  ===============================================  =====================================
``bert``            BertForMaskedLM / …ForSequenceClassification /   WordPiece (``BertTokenizer``)
                    BertModel; D 16, 4 heads, 2 token types
``roberta``         Roberta…; D 24, 2 heads, 1 token type, pad 1     byte-level BPE (``RobertaTokenizer``)
``xlm_roberta``     XLMRoberta…; D 32, 4 heads, 1 token type, pad 1  Unigram / Metaspace (``XLMRobertaTokenizer``)
``electra``         Electra…; embedding_size == hidden_size (24)     WordPiece (``ElectraTokenizer``)
``electra_proj``    Electra…; embedding_size 16 ≠ hidden_size 32     WordPiece (``ElectraTokenizer``)
                    (``electra.embeddings_project``)
``distilbert``      DistilBert…; dim 16, 2 heads, no token types     WordPiece (``DistilBertTokenizer``)
==================  ===============================================  =====================================

Every model has 2 layers and ``max_position_embeddings`` 64, classifiers 3 labels; the model's
``vocab_size`` / ``pad_token_id`` are the tokenizer's.  ``initializer_range`` 0.2 so that heads,
positions and tokens matter.  Transformers 5 notes: ``BertTokenizer(vocab_file=…)`` (and the
``…Fast`` alias) silently ignores the file and builds a 5-token vocab; the vocabulary goes in as
``vocab=`` (a path or a dict).

Example:
    >>> hf, tok = build("roberta", "cls")                   # doctest: +SKIP
    >>> batch = family_batch("roberta", tok)                # doctest: +SKIP
    >>> d = save_family(tmp_path, "roberta", "cls")         # doctest: +SKIP
"""

from __future__ import annotations

import functools
import json
import tempfile
from pathlib import Path

import torch
import transformers

FAMILIES = ["bert", "roberta", "xlm_roberta", "electra", "electra_proj", "distilbert"]
KINDS = ["mlm", "cls", "base"]
N_LABELS = 3
N_LAYERS = 2
MAX_POS = 64

_CLASS_PREFIX = {"bert": "Bert", "roberta": "Roberta", "xlm_roberta": "XLMRoberta", "electra": "Electra",
                 "electra_proj": "Electra", "distilbert": "DistilBert"}
_SUFFIX = {"mlm": "ForMaskedLM", "cls": "ForSequenceClassification", "base": "Model"}

# ---------------------------------------------------------------------- text
_WORDS = ("the a cat dog sat on mat ran fast slow big small red blue green house tree car road sky sun moon "
          "star water fire earth wind rain snow day night man woman child king queen city river hill old new "
          "and with from under over near").split()
_SUFFIXES = ["##s", "##ed", "##ing", "##er"]


def sentences(n: int = 50, seed: int = 0) -> list[str]:
    """``n`` deterministic little sentences (3–11 words) over ``_WORDS`` (tokenizer training text)."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        k = int(torch.randint(3, 12, (1,), generator=g))
        idx = torch.randint(0, len(_WORDS), (k,), generator=g).tolist()
        out.append(" ".join(_WORDS[i] for i in idx))
    return out


# batch texts: four rows of different lengths (row 0 the longest, so the others are padded)
BATCH_TEXTS = [
    "the big red dog ran fast over the old road and the small cat sat on the mat",
    "a cat sat",
    "the king and the queen ran near the river",
    "snow",
]
BATCH_PAIRS = ["a dog ran", "the sun", "rain and wind", "day"]  # second segments (token types 1)


# ---------------------------------------------------------------------- tokenizers
@functools.lru_cache(maxsize=None)
def _wordpiece_vocab_file() -> str:
    """A vocab.txt: [PAD] [UNK] [CLS] [SEP] [MASK] (ids 0–4, as BERT's tokenizer assumes) + the words."""
    d = Path(tempfile.mkdtemp(prefix="nodeprobe_wp_"))
    f = d / "vocab.txt"
    f.write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *_WORDS, *_SUFFIXES]) + "\n")
    return str(f)


@functools.lru_cache(maxsize=None)
def _bpe_vocab_merges() -> tuple[str, tuple[tuple[str, str], ...]]:
    """Byte-level BPE trained on ``sentences()``: (vocab json, merges); <s> <pad> </s> <unk> <mask> = 0–4
    (RoBERTa's order: bos 0, pad 1, eos 2, unk 3)."""
    from tokenizers import ByteLevelBPETokenizer

    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(sentences(), vocab_size=300, min_frequency=2, show_progress=False,
                            special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"])
    model = json.loads(bpe._tokenizer.to_str())["model"]
    merges = tuple(tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in model["merges"])
    return json.dumps(model["vocab"]), merges


@functools.lru_cache(maxsize=None)
def _unigram_vocab() -> str:
    """A SentencePiece-style Unigram vocab trained on ``sentences()``: [(piece, score)] as json, with
    <s> <pad> </s> <unk> at 0–3 (XLM-R's order) and <mask> last (as in XLM-R)."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    t = Tokenizer(models.Unigram())
    t.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.WhitespaceSplit(),
                                               pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")])
    trainer = trainers.UnigramTrainer(vocab_size=120, special_tokens=["<s>", "<pad>", "</s>", "<unk>"],
                                      unk_token="<unk>", show_progress=False)
    t.train_from_iterator(sentences(), trainer=trainer)
    vocab = [list(v) for v in json.loads(t.to_str())["model"]["vocab"]]
    assert [p for p, _ in vocab[:4]] == ["<s>", "<pad>", "</s>", "<unk>"], vocab[:5]
    vocab.append(["<mask>", 0.0])
    return json.dumps(vocab)


def make_tokenizer(family: str):
    """The family's tokenizer, built offline (no hub): WordPiece for BERT / ELECTRA / DistilBERT,
    byte-level BPE for RoBERTa, Unigram for XLM-R."""
    if family in ("bert", "electra", "electra_proj", "distilbert"):
        cls = {"bert": transformers.BertTokenizer, "distilbert": transformers.DistilBertTokenizer}.get(
            family, transformers.ElectraTokenizer)
        tok = cls(vocab=_wordpiece_vocab_file())  # NOT vocab_file=: ignored in transformers 5
    elif family == "roberta":
        vocab, merges = _bpe_vocab_merges()
        tok = transformers.RobertaTokenizer(vocab=json.loads(vocab), merges=list(merges))
    elif family == "xlm_roberta":
        tok = transformers.XLMRobertaTokenizer(vocab=[tuple(v) for v in json.loads(_unigram_vocab())])
    else:
        raise KeyError(family)
    tok.model_max_length = MAX_POS - 2 if family in ("roberta", "xlm_roberta") else MAX_POS
    return tok


# ---------------------------------------------------------------------- models
def hf_class(family: str, kind: str):
    """The HF class of ``family`` × ``kind`` (``("distilbert", "cls")`` → DistilBertForSequenceClassification)."""
    return getattr(transformers, _CLASS_PREFIX[family] + _SUFFIX[kind])


def hf_class_name(family: str, kind: str) -> str:
    return _CLASS_PREFIX[family] + _SUFFIX[kind]


def make_config(family: str, tok, attn: str | None = None):
    """A tiny config whose vocab size and special ids are ``tok``'s."""
    common = dict(vocab_size=len(tok), pad_token_id=tok.pad_token_id, num_labels=N_LABELS,
                  max_position_embeddings=MAX_POS, initializer_range=0.2)
    if family == "bert":
        cfg = transformers.BertConfig(hidden_size=16, num_hidden_layers=N_LAYERS, num_attention_heads=4,
                                      intermediate_size=32, type_vocab_size=2, **common)
    elif family in ("roberta", "xlm_roberta"):
        cls = transformers.RobertaConfig if family == "roberta" else transformers.XLMRobertaConfig
        wide = family == "xlm_roberta"
        cfg = cls(hidden_size=32 if wide else 24, num_hidden_layers=N_LAYERS, num_attention_heads=4 if wide else 2,
                  intermediate_size=64 if wide else 48, type_vocab_size=1,  # as roberta-base / xlm-roberta-base
                  layer_norm_eps=1e-5,  # as roberta-base / xlm-roberta-base (BERT/ELECTRA: 1e-12)
                  bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, **common)
    elif family == "electra":
        cfg = transformers.ElectraConfig(embedding_size=24, hidden_size=24, num_hidden_layers=N_LAYERS,
                                         num_attention_heads=2, intermediate_size=48, type_vocab_size=2, **common)
    elif family == "electra_proj":
        cfg = transformers.ElectraConfig(embedding_size=16, hidden_size=32, num_hidden_layers=N_LAYERS,
                                         num_attention_heads=4, intermediate_size=64, type_vocab_size=2, **common)
    elif family == "distilbert":
        cfg = transformers.DistilBertConfig(dim=16, n_layers=N_LAYERS, n_heads=2, hidden_dim=32,
                                            sinusoidal_pos_embds=False, **common)
    else:
        raise KeyError(family)
    if attn is not None:
        cfg._attn_implementation = attn
    return cfg


def build(family: str, kind: str, seed: int = 0, attn: str | None = None):
    """``(hf_model, tokenizer)``: a seeded random ``family`` × ``kind`` model in eval mode, fp32.

    Every 1-D parameter (biases, LayerNorm weights and biases) gets seeded noise on top of HF's
    init (0 / 1), so a dropped bias or LayerNorm is seen; embedding rows (the padding rows that HF
    zeroes included) stay as initialised.

    ``attn``: ``"eager"`` for HF ``output_attentions``; default HF's own choice (SDPA)."""
    tok = make_tokenizer(family)
    cfg = make_config(family, tok, attn)
    torch.manual_seed(seed)
    hf = hf_class(family, kind)(cfg).float().eval()
    with torch.no_grad():  # HF initialises biases to 0 and LayerNorms to (1, 0): make them matter
        for p in hf.parameters():
            if p.dim() == 1:
                p.add_(0.2 * torch.randn_like(p))
    return hf, tok


def save_family(tmp_path, family: str, kind: str, seed: int = 0, name: str | None = None) -> Path:
    """Save a :func:`build` model and its tokenizer (``save_pretrained``, safetensors) into
    ``tmp_path / name`` (default ``{family}-{kind}``); returns the directory."""
    hf, tok = build(family, kind, seed)
    d = Path(tmp_path) / (name or f"{family}-{kind}")
    hf.save_pretrained(d, safe_serialization=True)
    tok.save_pretrained(d)
    return d


# ---------------------------------------------------------------------- inputs
def has_token_types(family: str) -> bool:
    """Whether the family has token-type (segment) embeddings worth feeding (type_vocab_size > 1)."""
    return family in ("bert", "electra", "electra_proj")


def family_batch(family: str, tok, padding_side: str = "right", pairs: bool | None = None) -> dict:
    """A padded batch of ``BATCH_TEXTS`` (4 rows of different lengths; rows 1–3 padded with the
    tokenizer's pad id, ``attention_mask`` 0 there) as the HF forward takes it: ``input_ids``,
    ``attention_mask`` and, for families with token types, ``token_type_ids`` (sentence pairs, so
    some types are 1)."""
    pairs = has_token_types(family) if pairs is None else pairs
    old = tok.padding_side
    tok.padding_side = padding_side
    try:
        enc = tok(BATCH_TEXTS, BATCH_PAIRS if pairs else None, padding=True, return_tensors="pt")
    finally:
        tok.padding_side = old
    out = {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}
    if has_token_types(family):
        out["token_type_ids"] = enc["token_type_ids"]
    return out


def hf_output(hf, batch: dict, **kw):
    """logits (MLM ``[B, P, V]``, classifier ``[B, K]``) or, for a bare encoder, the last hidden state."""
    out = hf(**batch, **kw)
    return out.logits if hasattr(out, "logits") else out.last_hidden_state


def encoder_layers(hf):
    """The ``nn.ModuleList`` of transformer blocks (``encoder.layer`` / DistilBERT ``transformer.layer``)."""
    base = hf.base_model
    return base.transformer.layer if hasattr(base, "transformer") else base.encoder.layer


def attn_out_proj(layer):
    """The Linear that maps the concatenated head outputs z to the attention output (W_O):
    ``attention.output.dense`` (BERT, RoBERTa, XLM-R, ELECTRA) / ``attention.out_lin`` (DistilBERT)."""
    att = layer.attention
    return att.out_lin if hasattr(att, "out_lin") else att.output.dense


def hf_sizes(hf_config) -> dict:
    """n_layers / n_heads / d_head / d_mlp / d_vocab / d_model from a HF config of any family
    (DistilBERT names them n_layers / n_heads / hidden_dim / dim)."""
    if hf_config.model_type == "distilbert":
        L, H, D, F = hf_config.n_layers, hf_config.n_heads, hf_config.dim, hf_config.hidden_dim
    else:
        L, H, D, F = (hf_config.num_hidden_layers, hf_config.num_attention_heads, hf_config.hidden_size,
                      hf_config.intermediate_size)
    return dict(n_layers=L, n_heads=H, d_head=D // H, d_mlp=F, d_vocab=hf_config.vocab_size, d_model=D)
