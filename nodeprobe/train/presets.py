"""Model and training presets (METHODS §0).

``paper`` is BERT-6 as in the papers; ``cpu`` keeps the paper's 6 × 12 head grid at a width two CPU
cores can pre-train in under an hour; ``smoke`` keeps the same 6 × 12 head grid at a tiny width
(d_model 48, d_head 4) and runs the whole pipeline (``nodeprobe reproduce --preset smoke``) in
under two minutes on two cores.

Example:
    >>> p = get_preset("cpu")
    >>> p.model.n_layers, p.model.n_heads, p.model.d_model
    (6, 12, 192)
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace

from nodeprobe.data.corpus import HELDOUT_EVERY
from nodeprobe.errors import NodeprobeError

# bert-base-uncased special ids (METHODS §0: set explicitly)
PAD_ID, UNK_ID, CLS_ID, SEP_ID, MASK_ID = 0, 100, 101, 102, 103


@dataclass(frozen=True)
class ModelSize:
    """Architecture of a BERT encoder."""

    n_layers: int
    d_model: int
    n_heads: int
    d_ff: int
    max_len: int = 128
    dropout: float = 0.1

    def validate(self) -> "ModelSize":
        """Raise a one-line error for sizes that cannot make a BERT."""
        for name in ("n_layers", "d_model", "n_heads", "d_ff", "max_len"):
            v = getattr(self, name)
            if not isinstance(v, int) or v < 1:
                raise NodeprobeError(f"--{name.replace('_', '-')} {v}: expected a positive integer")
        if self.d_model % self.n_heads:
            raise NodeprobeError(
                f"d_model={self.d_model} does not divide into n_heads={self.n_heads} heads"
            )
        if not 0.0 <= self.dropout < 1.0:
            raise NodeprobeError(f"dropout={self.dropout}: expected 0 ≤ p < 1")
        return self

    def bert_config(self, vocab_size: int, **extra):
        """A ``transformers.BertConfig`` with the bert-base-uncased special ids set explicitly."""
        from transformers import BertConfig

        return BertConfig(
            vocab_size=vocab_size,
            hidden_size=self.d_model,
            num_hidden_layers=self.n_layers,
            num_attention_heads=self.n_heads,
            intermediate_size=self.d_ff,
            max_position_embeddings=self.max_len,
            hidden_dropout_prob=self.dropout,
            attention_probs_dropout_prob=self.dropout,
            hidden_act="gelu",
            pad_token_id=PAD_ID,
            bos_token_id=CLS_ID,
            eos_token_id=SEP_ID,
            type_vocab_size=2,
            **extra,
        )


@dataclass(frozen=True)
class PretrainSettings:
    """MLM pre-training hyper-parameters."""

    epochs: int
    batch_size: int = 32
    lr: float = 5e-5
    weight_decay: float = 0.01
    warmup: float = 0.06  # fraction of steps with linear warm-up, then linear decay to 0
    mask_rate: float = 0.15
    max_sequences: int | None = None  # cap on training sequences (smoke)
    heldout_every: int = HELDOUT_EVERY  # an article is held out iff its stable hash ≡ 0 (mod 20): ~5%
    betas: tuple[float, float] = (0.9, 0.98)
    precision: str = "fp32"  # "bf16": autocast matmuls (CPU with avx512_bf16, or CUDA)


@dataclass(frozen=True)
class FinetuneSettings:
    """Sequence-classification fine-tuning hyper-parameters."""

    epochs: int
    batch_size: int = 32
    lr: float = 5e-5
    weight_decay: float = 0.01
    warmup: float = 0.06
    n_train: int = 630
    n_test: int = 70
    dropout: float = 0.1  # hidden and attention dropout while fine-tuning (pre-training may use 0)
    precision: str = "fp32"


@dataclass(frozen=True)
class Preset:
    """A named bundle: model size, pre-training and fine-tuning settings, analysis sizes."""

    name: str
    model: ModelSize
    pretrain: PretrainSettings
    finetune: FinetuneSettings
    minilm_finetune: FinetuneSettings | None = None
    mlm_eval_sequences: int = 2000  # held-out sequences evaluated by the MLM analyses
    cooperation_repeats: int = 20
    track_items: int = 3000  # masked positions per snapshot in `track`
    similarity_texts: int = 32  # held-out sequences for the head vector-space study
    notes: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        """JSON-ready settings (printed by every report)."""
        return asdict(self)


PRESETS: dict[str, Preset] = {
    "paper": Preset(
        name="paper",
        model=ModelSize(n_layers=6, d_model=768, n_heads=12, d_ff=3072),
        pretrain=PretrainSettings(epochs=50, lr=5e-5),
        finetune=FinetuneSettings(epochs=50, lr=5e-5),
        minilm_finetune=FinetuneSettings(epochs=10, lr=5e-5),
        mlm_eval_sequences=5000,
    ),
    "cpu": Preset(
        name="cpu",
        # Budget regime (as in "cramming" BERT): no dropout while pre-training, bf16 autocast
        # matmuls (2.5x faster on avx512_bf16 CPUs), a 20x larger peak lr than the paper's 5e-5
        # with a short warm-up and linear decay to zero, Adam beta2 0.98 (RoBERTa).
        model=ModelSize(n_layers=6, d_model=192, n_heads=12, d_ff=768, dropout=0.0),
        pretrain=PretrainSettings(epochs=8, lr=1e-3, warmup=0.04, precision="bf16"),
        finetune=FinetuneSettings(epochs=4, lr=2e-4, precision="bf16"),
        minilm_finetune=FinetuneSettings(epochs=3, lr=1e-4, precision="bf16"),
        mlm_eval_sequences=2000,
    ),
    "smoke": Preset(
        name="smoke",
        # the paper's head grid (6 blocks × 12 heads) at a width the main job trains in seconds
        model=ModelSize(n_layers=6, d_model=48, n_heads=12, d_ff=96, dropout=0.1),
        pretrain=PretrainSettings(epochs=2, batch_size=16, lr=2e-3, max_sequences=320),
        # 72 heads are swept / isolated one by one: small eval sets keep those stages in seconds
        finetune=FinetuneSettings(epochs=3, batch_size=16, lr=2e-3, n_train=100, n_test=10),
        minilm_finetune=None,
        mlm_eval_sequences=24,
        cooperation_repeats=5,
        track_items=300,
        similarity_texts=8,
    ),
}


def get_preset(name: str) -> Preset:
    """Look a preset up by name; a one-line error names the allowed ones.

    Example:
        >>> get_preset("smoke").model.n_layers, get_preset("smoke").model.n_heads
        (6, 12)
    """
    if name not in PRESETS:
        raise NodeprobeError(f"preset={name}: expected one of {', '.join(PRESETS)}")
    return PRESETS[name]


VOCAB_SIZE = 30522  # bert-base-uncased: the vocabulary every pre-trained model here embeds
TRAIN_BYTES_PER_PARAM = 16  # fp32 weights, gradients and Adam's two moments


def n_params(size: ModelSize, vocab_size: int = VOCAB_SIZE) -> int:
    """Parameters of a BERT MLM of this size (embeddings, blocks, MLM head with a tied decoder).

    Example:
        >>> round(n_params(get_preset("paper").model) / 1e6)     # BERT-6 (bert-base-uncased: 110 M at 12 blocks)
        67
    """
    d, f = size.d_model, size.d_ff
    emb = (vocab_size + size.max_len + 2) * d + 2 * d
    block = 4 * (d * d + d) + 2 * d * f + f + d + 4 * d
    head = d * d + d + 2 * d + vocab_size + d * d + d  # transform + LayerNorm + decoder bias + pooler
    return emb + size.n_layers * block + head


def check_fits(size: ModelSize, given: dict | None = None, vocab_size: int = VOCAB_SIZE) -> ModelSize:
    """Refuse a size whose training state (:data:`TRAIN_BYTES_PER_PARAM` per parameter) cannot fit
    in this machine's RAM: one line naming the given dimension that grew most (``given``: the
    overrides, ``{"d_model": 2000000}``), the estimate and the limit."""
    from nodeprobe.budget import check_budget

    p = n_params(size, vocab_size)
    given = {k: v for k, v in (given or {}).items() if v is not None} or {"d_model": size.d_model}
    name = max(given, key=lambda k: given[k])
    check_budget(f"--{name.replace('_', '-')}", given[name], need_bytes=p * TRAIN_BYTES_PER_PARAM,
                 how=f"{p:.3g} parameters × {TRAIN_BYTES_PER_PARAM} bytes for weights, gradients and Adam moments")
    return size


def custom_size(base: ModelSize, **overrides) -> ModelSize:
    """``base`` with explicit sizes replaced (``None`` keeps the base value), validated, and refused
    up front when its training state cannot fit in memory (:func:`check_fits`)."""
    return check_fits(replace(base, **{k: v for k, v in overrides.items() if v is not None}).validate(), overrides)
