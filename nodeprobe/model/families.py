"""One declarative module map per encoder family: where each piece of a post-LN BERT-style block lives.

:class:`~nodeprobe.model.bert.HookedBert` and :func:`~nodeprobe.hooks.attach` read a Hugging Face
model only through these maps, so adding a family is adding a :class:`Family` (as pyvene keeps one
module map per architecture).  Every family here has BERT's post-LayerNorm block::

    a = W_O · attention(x) + b_O;  y = LN1(x + a);  m = fc_out(act(fc_in(y)));  out = LN2(y + m)

and differs only in module names, in its embeddings (RoBERTa's position ids count from the pad
id; ELECTRA projects its embeddings to the hidden size; DistilBERT has no token types) and in its
heads.  ``readout.hook_in`` is always the vector entering the head's final linear map:

=============  ==========================================  ==========================================
family         MLM head (→ ``readout.hook_in`` → decoder)  classifier (first token → … → hook_in → out)
=============  ==========================================  ==========================================
bert           dense → hidden_act → LayerNorm             pooler dense → tanh
roberta        dense → gelu → layer_norm                  dropout → dense → tanh → dropout
xlm-roberta    as roberta                                  as roberta
electra        dense (D→E) → gelu → LayerNorm             dropout → dense → gelu → dropout
distilbert     vocab_transform → activation → LayerNorm   pre_classifier → relu → dropout
=============  ==========================================  ==========================================

Paths are dotted attribute paths: encoder parts relative to the encoder (the base model, e.g.
``BertModel``), block parts relative to one layer, head parts relative to the head model.  An
activation is a path to an activation module, or one of ``tanh``/``gelu``/``relu``.

Example:
    >>> family_of("RobertaForSequenceClassification").name, FAMILIES["distilbert"].q
    ('roberta', 'attention.q_lin')
    >>> family_of("GPT2LMHeadModel")
    Traceback (most recent call last):
    ...
    nodeprobe.errors.NodeprobeError: model class GPT2LMHeadModel: not a supported encoder; supported: BertForMaskedLM, BertForPreTraining, BertForSequenceClassification, BertModel, RobertaForMaskedLM, RobertaForSequenceClassification, RobertaModel, XLMRobertaForMaskedLM, XLMRobertaForSequenceClassification, XLMRobertaModel, ElectraForMaskedLM, ElectraForSequenceClassification, ElectraModel, ElectraForPreTraining, DistilBertForMaskedLM, DistilBertForSequenceClassification, DistilBertModel
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import reduce

import torch
import torch.nn.functional as F
from torch import nn

from nodeprobe.errors import NodeprobeError

_ACT_FUNCTIONS = {"tanh": torch.tanh, "relu": F.relu, "gelu": F.gelu}


@dataclass(frozen=True)
class Head:
    """An output head: ``first token (cls) | rows (mlm) → [drop_in] → dense → act → [norm] → [drop_mid] → out``.

    ``readout.hook_in`` is the vector entering ``drop_mid → out``: HookedBert fires it before
    ``drop_mid``, :func:`~nodeprobe.hooks.attach` at the input of ``out`` (after it) — the same
    vector in eval mode, where the dropout is the identity.  ``bias``: a separate bias parameter of ``out`` when its own is ``None`` (BERT's
    ``cls.predictions.bias``).
    """

    dense: str
    act: str
    out: str
    norm: str | None = None
    drop_in: str | None = None
    drop_mid: str | None = None
    bias: str | None = None


@dataclass(frozen=True)
class Family:
    """Where a family keeps each part (see the module docstring)."""

    name: str
    model_types: tuple[str, ...]
    classes: dict  # HF class name → kind ("mlm" | "cls" | "base")
    prefix: str  # the encoder's attribute in a head model (``base_model_prefix``)
    mlm: Head
    cls: Head
    # embeddings (relative to the encoder)
    word: str = "embeddings.word_embeddings"
    position: str = "embeddings.position_embeddings"
    token_type: str | None = "embeddings.token_type_embeddings"
    embed_ln: str = "embeddings.LayerNorm"
    embed_dropout: str = "embeddings.dropout"
    embed_project: str | None = None  # ELECTRA: embeddings_project (E → D) when E ≠ D
    positions_from_pad: bool = False  # RoBERTa: position ids count from pad_token_id + 1, pads at pad_token_id
    layers: str = "encoder.layer"
    pooler: str | None = "pooler"  # the encoder's own pooler (readout.hook_in of a bare encoder)
    # one layer (relative to it)
    attn_module: str = "attention.self"  # the module that calls HF's attention interface
    q: str = "attention.self.query"
    k: str = "attention.self.key"
    v: str = "attention.self.value"
    attn_dropout: str = "attention.self.dropout"  # on the pattern
    o: str = "attention.output.dense"
    o_dropout: str | None = "attention.output.dropout"
    ln1: str = "attention.output.LayerNorm"
    fc_in: str = "intermediate.dense"
    act: str = "intermediate.intermediate_act_fn"
    mlp_post: str = "intermediate"  # a module whose output is act(fc_in(y)) (for attach())
    fc_out: str = "output.dense"
    mlp_dropout: str | None = "output.dropout"
    ln2: str = "output.LayerNorm"
    # config.json keys of the sizes (Hugging Face's own names for this family)
    size_keys: dict = field(default_factory=lambda: {
        "d_model": "hidden_size", "n_layers": "num_hidden_layers", "n_heads": "num_attention_heads",
        "d_mlp": "intermediate_size", "d_vocab": "vocab_size", "n_ctx": "max_position_embeddings"})
    act_key: str = "hidden_act"
    dropout_keys: tuple = ("hidden_dropout_prob", "attention_probs_dropout_prob", "classifier_dropout")  # --dropout

    def max_len(self, hf_config) -> int:
        """The longest sequence the position embeddings allow (RoBERTa: ``pad_token_id + 1`` fewer rows)."""
        n = int(getattr(hf_config, self.size_keys["n_ctx"]))
        if self.positions_from_pad:
            n -= int(getattr(hf_config, "pad_token_id", 1) or 0) + 1
        return n

    def kind_of(self, arch: str) -> str:
        """The output head of HF class ``arch`` (``mlm`` | ``cls`` | ``base``)."""
        return self.classes[arch]

    def class_for(self, kind: str) -> str:
        """The HF class name of this family with head ``kind``."""
        for name, k in self.classes.items():
            if k == kind:
                return name
        raise NodeprobeError(f"kind={kind}: expected mlm, cls or base")

    def hf_class(self, kind: str):
        """The ``transformers`` class of this family with head ``kind``."""
        import transformers

        return getattr(transformers, self.class_for(kind))

    def encoder(self, hf_model: nn.Module) -> nn.Module:
        """The base model inside ``hf_model`` (``hf_model`` itself for a base class; a head model
        without a task head here, e.g. ``ElectraForPreTraining``, gives its encoder)."""
        return getattr(hf_model, self.prefix, hf_model)


_ROBERTA_MLM = Head(dense="lm_head.dense", act="gelu", norm="lm_head.layer_norm", out="lm_head.decoder",
                    bias="lm_head.bias")
_ROBERTA_CLS = Head(dense="classifier.dense", act="tanh", out="classifier.out_proj", drop_in="classifier.dropout",
                    drop_mid="classifier.dropout")

FAMILIES: dict[str, Family] = {f.name: f for f in (
    Family("bert", ("bert",),
           {"BertForMaskedLM": "mlm", "BertForPreTraining": "mlm", "BertForSequenceClassification": "cls",
            "BertModel": "base"},
           "bert",
           mlm=Head(dense="cls.predictions.transform.dense", act="cls.predictions.transform.transform_act_fn",
                    norm="cls.predictions.transform.LayerNorm", out="cls.predictions.decoder",
                    bias="cls.predictions.bias"),
           cls=Head(dense="bert.pooler.dense", act="tanh", out="classifier", drop_mid="dropout")),
    Family("roberta", ("roberta",),
           {"RobertaForMaskedLM": "mlm", "RobertaForSequenceClassification": "cls", "RobertaModel": "base"},
           "roberta", mlm=_ROBERTA_MLM, cls=_ROBERTA_CLS, positions_from_pad=True),
    Family("xlm-roberta", ("xlm-roberta",),
           {"XLMRobertaForMaskedLM": "mlm", "XLMRobertaForSequenceClassification": "cls", "XLMRobertaModel": "base"},
           "roberta", mlm=_ROBERTA_MLM, cls=_ROBERTA_CLS, positions_from_pad=True),
    Family("electra", ("electra",),
           {"ElectraForMaskedLM": "mlm", "ElectraForSequenceClassification": "cls", "ElectraModel": "base",
            "ElectraForPreTraining": "base"},
           "electra",
           mlm=Head(dense="generator_predictions.dense", act="generator_predictions.activation",
                    norm="generator_predictions.LayerNorm", out="generator_lm_head"),
           cls=Head(dense="classifier.dense", act="classifier.activation", out="classifier.out_proj",
                    drop_in="classifier.dropout", drop_mid="classifier.dropout"),
           embed_project="embeddings_project", pooler=None),
    Family("distilbert", ("distilbert",),
           {"DistilBertForMaskedLM": "mlm", "DistilBertForSequenceClassification": "cls", "DistilBertModel": "base"},
           "distilbert",
           mlm=Head(dense="vocab_transform", act="activation", norm="vocab_layer_norm", out="vocab_projector"),
           cls=Head(dense="pre_classifier", act="relu", out="classifier", drop_mid="dropout"),
           token_type=None, layers="transformer.layer", pooler=None, attn_module="attention",
           q="attention.q_lin", k="attention.k_lin", v="attention.v_lin", attn_dropout="attention.dropout",
           o="attention.out_lin", o_dropout=None, ln1="sa_layer_norm", fc_in="ffn.lin1", act="ffn.activation",
           mlp_post="ffn.activation", fc_out="ffn.lin2", mlp_dropout="ffn.dropout", ln2="output_layer_norm",
           size_keys={"d_model": "dim", "n_layers": "n_layers", "n_heads": "n_heads", "d_mlp": "hidden_dim",
                      "d_vocab": "vocab_size", "n_ctx": "max_position_embeddings"},
           act_key="activation", dropout_keys=("dropout", "attention_dropout", "seq_classif_dropout")),
)}

#: HF class name → its family
ARCH_FAMILY: dict[str, Family] = {arch: f for f in FAMILIES.values() for arch in f.classes}
#: HF class name → its output head
ARCH_KIND: dict[str, str] = {arch: k for f in FAMILIES.values() for arch, k in f.classes.items()}
#: config.json ``model_type`` → its family
MODEL_TYPES: dict[str, Family] = {t: f for f in FAMILIES.values() for t in f.model_types}


def family_of(arch: str) -> Family:
    """The family of Hugging Face class name ``arch``; one line naming it and the supported classes."""
    fam = ARCH_FAMILY.get(arch)
    if fam is None:
        raise NodeprobeError(f"model class {arch}: not a supported encoder; supported: {', '.join(ARCH_KIND)}")
    return fam


def family_of_type(model_type, where: str) -> Family:
    """The family of a config's ``model_type``; one line naming ``where``, the value and the supported ones."""
    fam = MODEL_TYPES.get(model_type) if isinstance(model_type, str) else None
    if fam is None:
        raise NodeprobeError(f"{where}: model_type {model_type!r} is not a supported encoder; supported: "
                             f"{', '.join(repr(t) for t in MODEL_TYPES)}")
    return fam


def get(root: nn.Module, path: str | None):
    """The submodule (or parameter) at dotted ``path`` of ``root`` (None for no path or a missing one)."""
    if path is None:
        return None
    try:
        return reduce(getattr, path.split("."), root)
    except AttributeError:
        return None


def activation(root: nn.Module, spec: str):
    """An activation callable: the module at path ``spec`` of ``root``, or ``tanh``/``gelu``/``relu``."""
    if spec in _ACT_FUNCTIONS:
        return _ACT_FUNCTIONS[spec]
    mod = get(root, spec)
    if mod is None:
        raise NodeprobeError(f"no activation at {spec} in {type(root).__name__}")
    return mod


def identity(x):
    """No-op stand-in for a dropout a family does not have."""
    return x
