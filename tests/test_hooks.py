"""nodeprobe.hooks against hand-written references (tiny random BERTs, fp32, offline).

* head ablation / isolation / mean ablation == zeroing (or filling) that head's slice of the
  input of ``attention.output.dense`` with a plain PyTorch pre-hook on the HF model;
* ``keep_nodes`` == ``W[:, S] x_S + b`` (+ ``W[:, ~S] μ_{~S}``) from ``readout_weights()``;
* ``SiteCache`` == slices of ``run_with_cache``, kept on CPU and not as views;
* ``attach(hf)`` == HookedBert (cache values, ablations) and leaves no hooks behind;
* no hook survives an exception in ``run_with_hooks`` / ``hooks()`` / ``run_with_cache``;
* TransformerLens ``TransformerBridge`` (built offline) + nodeprobe hooks == HookedBert.
"""

from __future__ import annotations

import copy
import os

import pytest
import torch
from transformers import BertConfig, BertForMaskedLM, BertForSequenceClassification, BertModel

from nodeprobe.errors import NodeprobeError
from nodeprobe.hooks import SiteCache, ablate_head, attach, isolate_head, keep_nodes
from nodeprobe.model import HookedBert

TOL = 1e-5
SIZES = dict(vocab_size=50, hidden_size=48, num_hidden_layers=6, num_attention_heads=12,
             intermediate_size=64, max_position_embeddings=16, num_labels=5)
H, DH, D, L = 12, 4, 48, 6
CLASSES = {"mlm": BertForMaskedLM, "cls": BertForSequenceClassification, "base": BertModel}



def make_hf(task: str, seed: int = 0):
    torch.manual_seed(seed)
    return CLASSES[task](BertConfig(initializer_range=0.2, type_vocab_size=2, **SIZES)).eval()


def make_batch(B: int = 4, P: int = 9, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, SIZES["vocab_size"], (B, P), generator=g)
    ids[:, 0] = 2  # [CLS]
    lengths = [P] + torch.randint(2, P, (B - 1,), generator=g).tolist()
    mask = (torch.arange(P)[None] < torch.tensor(lengths)[:, None]).long()
    ids = ids.masked_fill(mask == 0, 0)
    types = torch.randint(0, 2, (B, P), generator=g) * mask
    return ids, mask, types


def logits_of(out):
    return out.logits if hasattr(out, "logits") else out.last_hidden_state


def maxdiff(a, b) -> float:
    assert a.shape == b.shape, (a.shape, b.shape)
    return float((a - b).detach().abs().max())


def n_hooks(module: torch.nn.Module) -> int:
    """Every PyTorch hook on ``module`` and its submodules."""
    return sum(
        len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks)
        + len(m._backward_pre_hooks)
        for m in module.modules()
    )


def hf_with_z_edit(hf, layer, edit, ids, mask, types):
    """Reference: run the plain HF model with ``edit(z[B, P, H, Dh])`` applied, in place, to the
    input of block ``layer``'s ``attention.output.dense`` (a torch forward pre-hook; no nodeprobe)."""
    dense = hf.base_model.encoder.layer[layer].attention.output.dense

    def pre(module, args):
        x = args[0].clone()
        edit(x.view(*x.shape[:2], H, DH))
        return (x,)

    handle = dense.register_forward_pre_hook(pre)
    try:
        with torch.no_grad():
            return logits_of(hf(input_ids=ids, attention_mask=mask, token_type_ids=types))
    finally:
        handle.remove()


@pytest.fixture(scope="module")
def models():
    return {task: (hf, HookedBert(hf)) for task in CLASSES for hf in [make_hf(task, seed=11)]}


# ---------------------------------------------------------------------- head ablations
@pytest.mark.parametrize("task", ["mlm", "cls"])
@pytest.mark.parametrize("layer,head", [(0, 0), (3, 7), (5, 11)])
def test_ablate_head_zero_equals_hf_slice_zeroing(models, task, layer, head):
    hf, model = models[task]
    ids, mask, types = make_batch()

    def zero(z):
        z[:, :, head] = 0.0

    ref = hf_with_z_edit(hf, layer, zero, ids, mask, types)
    with torch.no_grad():
        got = model.run_with_hooks(ids, attention_mask=mask, token_type_ids=types,
                                   fwd_hooks=[ablate_head(layer, head)])
        clean = model(ids, attention_mask=mask, token_type_ids=types)
    assert maxdiff(got, ref) <= TOL
    assert maxdiff(got, clean) > 1e-4  # the ablation did something


@pytest.mark.parametrize("task", ["mlm", "cls"])
def test_isolate_head_equals_zeroing_all_other_slices(models, task):
    hf, model = models[task]
    ids, mask, types = make_batch()
    layer, head = 2, 5

    def others(z):
        keep = z[:, :, head].clone()
        z.zero_()
        z[:, :, head] = keep

    ref = hf_with_z_edit(hf, layer, others, ids, mask, types)
    with torch.no_grad():
        got = model.run_with_hooks(ids, attention_mask=mask, token_type_ids=types,
                                   fwd_hooks=[isolate_head(layer, head)])
    assert maxdiff(got, ref) <= TOL


@pytest.mark.parametrize("per_position", [True, False], ids=["pos_head_dhead", "head_dhead"])
@pytest.mark.parametrize("fn", [ablate_head, isolate_head])
def test_mean_mode(models, per_position, fn):
    hf, model = models["mlm"]
    ids, mask, types = make_batch()
    layer, head = 4, 3
    g = torch.Generator().manual_seed(9)
    means = torch.randn((16, H, DH) if per_position else (H, DH), generator=g)
    P = ids.shape[1]
    heads = [head] if fn is ablate_head else [h for h in range(H) if h != head]

    def fill(z):
        for h in heads:
            z[:, :, h] = means[:P, h] if per_position else means[h]

    ref = hf_with_z_edit(hf, layer, fill, ids, mask, types)
    with torch.no_grad():
        got = model.run_with_hooks(ids, attention_mask=mask, token_type_ids=types,
                                   fwd_hooks=[fn(layer, head, mode="mean", means=means)])
    assert maxdiff(got, ref) <= TOL


def test_mean_of_the_batch_is_a_no_op_for_constant_z(models):
    """Mean-ablating with the head's own (position-wise) z over a batch of one changes nothing."""
    _, model = models["cls"]
    ids, mask, types = make_batch(B=1)
    with torch.no_grad():
        _, cache = model.run_with_cache(ids, names_filter="blocks.1.attn.hook_z")
        means = cache["blocks.1.attn.hook_z"][0]  # [pos, head, d_head]
        clean = model(ids)
        got = model.run_with_hooks(ids, fwd_hooks=[ablate_head(1, 4, mode="mean", means=means)])
    assert maxdiff(got, clean) <= TOL


def test_head_hook_errors():
    with pytest.raises(NodeprobeError, match="mode=max"):
        ablate_head(0, 1, mode="max")
    with pytest.raises(NodeprobeError, match="eval-set means"):
        isolate_head(0, 1, mode="mean")
    _, fn = ablate_head(0, 12)
    with pytest.raises(NodeprobeError, match="head=12: the model has heads 0–11"):
        fn(torch.zeros(2, 3, H, DH))
    _, fn = ablate_head(0, 1)
    with pytest.raises(NodeprobeError, match=r"expected \[batch, pos, head, d_head\]"):
        fn(torch.zeros(2, 3, D))  # head-merged z would silently zero a position otherwise
    _, fn = ablate_head(0, 1, mode="mean", means=torch.zeros(4, H, DH))
    with pytest.raises(NodeprobeError, match="cover 4 positions"):
        fn(torch.zeros(2, 9, H, DH))
    with pytest.raises(NodeprobeError, match="nodes=48"):
        keep_nodes([1, 48])[1](torch.zeros(2, D))


# ---------------------------------------------------------------------- keep_nodes
@pytest.mark.parametrize("task", ["mlm", "cls"])
def test_keep_nodes_zero_and_mean_by_hand(models, task):
    _, model = models[task]
    ids, mask, types = make_batch()
    S = [0, 3, 17, 40, 47]
    keep = torch.zeros(D, dtype=torch.bool)
    keep[S] = True
    W, b = model.readout_weights()
    g = torch.Generator().manual_seed(4)
    mu = torch.randn(D, generator=g)
    with torch.no_grad():
        _, cache = model.run_with_cache(ids, attention_mask=mask, token_type_ids=types,
                                        names_filter="readout.hook_in")
        x = cache["readout.hook_in"]
        zero = model.run_with_hooks(ids, attention_mask=mask, token_type_ids=types,
                                    fwd_hooks=[keep_nodes(S)])
        mean = model.run_with_hooks(ids, attention_mask=mask, token_type_ids=types,
                                    fwd_hooks=[keep_nodes(S, mode="mean", means=mu)])
    ref_zero = x[..., keep] @ W[:, keep].T + b
    ref_mean = ref_zero + mu[~keep] @ W[:, ~keep].T
    assert maxdiff(zero, ref_zero) <= TOL
    assert maxdiff(mean, ref_mean) <= TOL
    full = keep_nodes(range(D))
    with torch.no_grad():
        assert maxdiff(model.run_with_hooks(ids, attention_mask=mask, token_type_ids=types,
                                            fwd_hooks=[full]), x @ W.T + b) <= TOL


# ---------------------------------------------------------------------- SiteCache
def _is_compact(t: torch.Tensor) -> bool:
    """Owns exactly its own elements (not a view into a [batch, pos, ...] activation)."""
    return t.untyped_storage().nbytes() == t.numel() * t.element_size()


@pytest.mark.parametrize("task", ["mlm", "cls"])
def test_site_cache_cls_equals_run_with_cache_slices(models, task):
    _, model = models[task]
    names = ["blocks.0.attn.hook_z", "blocks.5.attn.hook_z", "blocks.3.hook_resid_post",
             "blocks.2.attn.hook_pattern", "readout.hook_in"]
    sc = SiteCache(names, positions="cls")
    per_item = {n: [] for n in names}
    refs = {n: [] for n in names}
    for seed in (1, 2):
        ids, mask, types = make_batch(seed=seed)
        with torch.no_grad():
            model.run_with_hooks(ids, attention_mask=mask, token_type_ids=types, fwd_hooks=sc.fwd_hooks())
            _, cache = model.run_with_cache(ids, attention_mask=mask, token_type_ids=types, names_filter=names)
        for n in names:
            per_item[n].extend(sc.store[n][-1:])
            t = cache[n]
            if n.endswith("hook_pattern"):
                refs[n].append(t[:, :, 0])
            elif t.dim() >= 3:  # has a position axis (MLM readout included)
                refs[n].append(t[:, 0])
            else:  # classifier readout [B, D]
                refs[n].append(t)
    for n in names:
        assert all(t.device.type == "cpu" and _is_compact(t) for t in per_item[n]), n
    got = sc.stack()
    assert sc.store == {n: [] for n in names}  # cleared
    for n in names:
        assert maxdiff(got[n], torch.cat(refs[n])) == 0.0, n
    assert got["blocks.0.attn.hook_z"].shape == (8, H, DH)
    assert got["blocks.2.attn.hook_pattern"].shape == (8, H, 9)
    assert got["readout.hook_in"].shape == (8, D)


def test_site_cache_chosen_positions_mlm(models):
    _, model = models["mlm"]
    ids, mask, types = make_batch()
    sel = mask.bool() & (torch.arange(9) % 2 == 1)
    b, p = sel.nonzero(as_tuple=True)
    names = ["blocks.1.attn.hook_z", "blocks.4.mlp.hook_post", "blocks.1.attn.hook_pattern", "readout.hook_in"]
    sc = SiteCache(names, positions=None, dtype=torch.float64)
    sc.set_positions(b, p)
    with torch.no_grad():
        model.run_with_hooks(ids, attention_mask=mask, token_type_ids=types, positions=sel,
                             fwd_hooks=sc.fwd_hooks())
        _, cache = model.run_with_cache(ids, attention_mask=mask, token_type_ids=types, positions=sel,
                                        names_filter=names)  # same eager/SDPA blocks as above
    got = sc.stack()
    n = len(b)
    assert got["blocks.1.attn.hook_z"].dtype == torch.float64
    assert maxdiff(got["blocks.1.attn.hook_z"], cache["blocks.1.attn.hook_z"][b, p].double()) == 0.0
    assert maxdiff(got["blocks.4.mlp.hook_post"], cache["blocks.4.mlp.hook_post"][b, p].double()) == 0.0
    assert maxdiff(got["blocks.1.attn.hook_pattern"], cache["blocks.1.attn.hook_pattern"][b, :, p].double()) == 0.0
    assert got["readout.hook_in"].shape == (n, D)  # already restricted by positions=: kept whole
    assert maxdiff(got["readout.hook_in"], cache["readout.hook_in"].double()) == 0.0


def test_site_cache_all_positions_and_errors(models):
    _, model = models["cls"]
    ids, mask, types = make_batch()
    sc = SiteCache(["blocks.2.hook_resid_mid"], positions="all")
    with torch.no_grad():
        model.run_with_hooks(ids, attention_mask=mask, fwd_hooks=sc.fwd_hooks())
        _, cache = model.run_with_cache(ids, attention_mask=mask, names_filter="blocks.2.hook_resid_mid")
    kept = sc.store["blocks.2.hook_resid_mid"][0]
    assert kept is not cache["blocks.2.hook_resid_mid"] and _is_compact(kept)
    assert maxdiff(sc.stack()["blocks.2.hook_resid_mid"], cache["blocks.2.hook_resid_mid"]) == 0.0
    with pytest.raises(NodeprobeError, match="positions 'first'"):
        SiteCache(["hook_full_embed"], positions="first")
    sc = SiteCache(["hook_full_embed"], positions=None)
    with pytest.raises(NodeprobeError, match="set_positions"):
        model.run_with_hooks(ids, fwd_hooks=sc.fwd_hooks())
    assert n_hooks(model) == 0
    assert SiteCache(["hook_full_embed"]).stack()["hook_full_embed"].numel() == 0


# ---------------------------------------------------------------------- attach
@pytest.mark.parametrize("task", list(CLASSES))
def test_attach_cache_equals_hooked_bert(models, task):
    hf, model = models[task]
    ids, mask, types = make_batch()
    impl = hf.config._attn_implementation
    with torch.no_grad():
        before = logits_of(hf(input_ids=ids, attention_mask=mask, token_type_ids=types))
        ref_out, ref = model.run_with_cache(ids, attention_mask=mask, token_type_ids=types)
        with attach(hf) as hooked:
            assert hf.config._attn_implementation != impl
            out, cache = hooked.run_with_cache(input_ids=ids, attention_mask=mask, token_type_ids=types)
        after = logits_of(hf(input_ids=ids, attention_mask=mask, token_type_ids=types))
    assert set(cache) == set(ref)
    key_ok = mask.bool()[:, None, None, :]
    for name in ref:
        a, r = cache[name], ref[name]
        if name.endswith("hook_attn_scores"):  # padded keys hold ~dtype-min: compare real keys
            a, r = a.masked_select(key_ok.expand_as(a)), r.masked_select(key_ok.expand_as(r))
        assert maxdiff(a, r) <= TOL, name
    assert maxdiff(logits_of(out), ref_out) <= TOL
    assert hf.config._attn_implementation == impl
    assert n_hooks(hf) == 0
    assert not any(hasattr(m, "_nodeprobe_attn") for m in hf.modules())
    assert maxdiff(after, before) == 0.0


@pytest.mark.parametrize("task", ["mlm", "cls"])
def test_attach_ablations_equal_hooked_bert(models, task):
    hf, model = models[task]
    ids, mask, types = make_batch()
    W, b = model.readout_weights()
    means = torch.randn(16, H, DH, generator=torch.Generator().manual_seed(3))
    hook_sets = [
        [ablate_head(3, 7)],
        [isolate_head(1, 0), ablate_head(4, 2, mode="mean", means=means)],
        [keep_nodes([1, 2, 30])],
        [("blocks.2.attn.hook_pattern", lambda p, hook: p.flip(-1))],  # pattern edits act too
        [("blocks.2.hook_resid_pre", lambda x, hook: 2 * x), ("blocks.0.attn.hook_q", lambda q, hook: -q)],
    ]
    with torch.no_grad():
        clean = model(ids, attention_mask=mask, token_type_ids=types)
        with attach(hf) as hooked:
            for hooks in hook_sets:
                got = logits_of(hooked.run_with_hooks(input_ids=ids, attention_mask=mask,
                                                      token_type_ids=types, fwd_hooks=hooks))
                ref = model.run_with_hooks(ids, attention_mask=mask, token_type_ids=types, fwd_hooks=hooks)
                assert maxdiff(got, ref) <= TOL, hooks
                assert maxdiff(got, clean) > 1e-4, hooks
    assert n_hooks(hf) == 0


def test_attach_cleans_up_after_exception(models):
    hf, _ = models["cls"]
    impl = hf.config._attn_implementation
    ids, mask, types = make_batch()
    with pytest.raises(RuntimeError, match="boom"):
        with attach(hf) as hooked:
            hooked.add_hook("blocks.0.attn.hook_z", lambda z, hook: None)  # a lingering hook too
            hooked(input_ids=ids, attention_mask=mask)
            raise RuntimeError("boom")
    assert n_hooks(hf) == 0
    assert hf.config._attn_implementation == impl
    assert not any(hasattr(m, "_nodeprobe_attn") for m in hf.modules())


def test_attach_restores_a_none_attn_implementation():
    hf = make_hf("cls", seed=2)
    hf.config._attn_implementation = None  # unset: HF falls back to eager
    with attach(hf):
        assert hf.config._attn_implementation == "nodeprobe_eager"
    assert hf.config._attn_implementation is None


# ---------------------------------------------------------------------- no hook survives an exception
def _raise(t, hook):
    raise ValueError("hook failed")


def _assert_exceptions_leave_no_hooks(runner, counted, ids, mask, call):
    """``runner`` is a HookedRootModule; ``counted`` the module tree whose hooks must stay at 0."""
    with pytest.raises(ValueError, match="hook failed"):
        runner.run_with_hooks(**call(ids, mask), fwd_hooks=[("blocks.3.attn.hook_pattern", _raise),
                                                            ("blocks.1.attn.hook_z", lambda z, hook: z)])
    assert n_hooks(counted) == 0
    with pytest.raises(KeyError, match="inside"):
        with runner.hooks(fwd_hooks=[ablate_head(2, 1), ("hook_full_embed", lambda x, hook: x)]):
            assert n_hooks(counted) > 0
            raise KeyError("inside")
    assert n_hooks(counted) == 0
    with pytest.raises(Exception):
        bad_mask = torch.ones(ids.shape[0], ids.shape[1] + 3, dtype=torch.long)
        bad_mask[:, -1] = 0
        runner.run_with_cache(**call(ids, bad_mask))  # fails mid-forward, after hooks fired
    assert n_hooks(counted) == 0
    with pytest.raises(ValueError, match="hook failed"):
        runner.run_with_hooks(**call(ids, mask), fwd_hooks=[("blocks.2.mlp.hook_post", _raise)],
                              bwd_hooks=[("blocks.2.attn.hook_pattern", lambda g, hook: None)])
    assert n_hooks(counted) == 0


def test_no_hook_survives_exceptions_hooked_bert(models):
    _, model = models["mlm"]
    ids, mask, _ = make_batch()
    _assert_exceptions_leave_no_hooks(model, model, ids, mask,
                                      lambda i, m: dict(input_ids=i, attention_mask=m))
    assert not any(b.attn._needs_eager() for b in model.blocks)


def test_no_hook_survives_exceptions_attach(models):
    hf, _ = models["cls"]
    ids, mask, _ = make_batch()
    with attach(hf) as hooked:
        handles = n_hooks(hf)  # attach's own PyTorch hooks on the HF modules
        assert handles > 0
        # inside: the HookPoints carry nothing; attach's wiring stays as it was
        _assert_exceptions_leave_no_hooks(hooked, hooked, ids, mask,
                                          lambda i, m: dict(input_ids=i, attention_mask=m))
        assert n_hooks(hf) == handles
    assert n_hooks(hf) == 0


# ---------------------------------------------------------------------- TransformerLens TransformerBridge
VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + [f"w{i}" for i in range(SIZES["vocab_size"] - 5)]


def save_tiny_mlm(directory, seed=21):
    """A tiny random BertForMaskedLM + a BertTokenizer on a hand-written vocab, saved offline."""
    from transformers import BertTokenizer

    hf = make_hf("mlm", seed=seed)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "vocab.txt").write_text("\n".join(VOCAB) + "\n")
    tok = BertTokenizer(vocab=str(directory / "vocab.txt"))
    hf.save_pretrained(directory)
    tok.save_pretrained(directory)
    return hf, tok


@pytest.fixture(scope="module")
def bridge_pair(tmp_path_factory):
    """(TransformerBridge booted from a local directory with the hub off, HookedBert on the same weights)."""
    from _tiny_models import boot_bridge_offline
    from nodeprobe.model import load_model

    d = tmp_path_factory.mktemp("tiny_bert_mlm")
    save_tiny_mlm(d)
    return boot_bridge_offline(d), load_model(d)


def test_bridge_hook_z_layout_and_unablated_parity(bridge_pair):
    bridge, model = bridge_pair
    ids, mask, types = make_batch()
    with torch.no_grad():
        logits, cache = bridge.run_with_cache(ids, attention_mask=mask, token_type_ids=types,
                                              names_filter=lambda n: n.endswith("attn.hook_z"))
        ref = model(ids, attention_mask=mask, token_type_ids=types)
        no_types = bridge(ids, attention_mask=mask)
    assert {f"blocks.{l}.attn.hook_z" for l in range(L)} <= set(cache)
    assert cache["blocks.0.attn.hook_z"].shape == (4, 9, H, DH)  # [batch, pos, head, d_head]
    assert maxdiff(logits, ref) <= TOL
    assert maxdiff(no_types, ref) > 1e-4  # token types reach the bridge
    assert (bridge.cfg.n_layers, bridge.cfg.n_heads, bridge.cfg.d_head) == (L, H, DH)


def test_bridge_names_that_match_nodeprobe(bridge_pair):
    """Bridge hook → nodeprobe hook with the same values (the mapping is in hooks/bridge_head_ablation.py)."""
    bridge, model = bridge_pair
    ids, mask, types = make_batch()
    same = {f"blocks.2.{s}": f"blocks.2.{s}" for s in (
        "hook_resid_pre", "attn.hook_q", "attn.hook_k", "attn.hook_v", "attn.hook_z",
        "attn.hook_pattern", "mlp.hook_pre", "mlp.hook_post", "hook_mlp_out")}
    same.update({
        "hook_embed": "hook_full_embed",
        "blocks.2.attn.o.hook_out": "blocks.2.hook_attn_out",  # bridge hook_attn_out is post-LN
        "blocks.2.hook_resid_mid": "blocks.2.hook_resid_post",  # bridge: LN1(x + a) + m
        "blocks.2.hook_resid_post": "blocks.2.hook_normalized_resid_post",
        "ln_final.hook_out": "readout.hook_in",
    })
    with torch.no_grad():
        _, bc = bridge.run_with_cache(ids, attention_mask=mask, token_type_ids=types, names_filter=list(same))
        _, nc = model.run_with_cache(ids, attention_mask=mask, token_type_ids=types, names_filter=list(same.values()))
    for b_name, n_name in same.items():
        assert maxdiff(bc[b_name], nc[n_name]) <= TOL, (b_name, n_name)


def test_bridge_head_ablation_equals_hooked_bert(bridge_pair):
    bridge, model = bridge_pair
    ids, mask, types = make_batch()
    means = torch.randn(16, H, DH, generator=torch.Generator().manual_seed(8))
    before = n_hooks(bridge)
    with torch.no_grad():
        clean = bridge(ids, attention_mask=mask, token_type_ids=types)
        for hooks in ([ablate_head(3, 7)], [ablate_head(0, 0), ablate_head(5, 11)], [isolate_head(2, 4)],
                      [ablate_head(1, 6, mode="mean", means=means)],
                      [isolate_head(4, 1, mode="mean", means=means[0])]):
            got = bridge.run_with_hooks(ids, attention_mask=mask, token_type_ids=types, fwd_hooks=hooks)
            ref = model.run_with_hooks(ids, attention_mask=mask, token_type_ids=types, fwd_hooks=hooks)
            assert maxdiff(got, ref) <= TOL, hooks
            assert maxdiff(got, clean) > 1e-4, hooks
        # keep_nodes: the bridge's readout vector is ln_final.hook_out
        _, fn = keep_nodes([3, 9, 27])
        got = bridge.run_with_hooks(ids, attention_mask=mask, fwd_hooks=[("ln_final.hook_out", fn)])
        ref = model.run_with_hooks(ids, attention_mask=mask, fwd_hooks=[keep_nodes([3, 9, 27])])
        assert maxdiff(got, ref) <= TOL
    with pytest.raises(ValueError):
        bridge.run_with_hooks(ids, fwd_hooks=[("blocks.1.attn.hook_z", _raise)])
    assert n_hooks(bridge) == before


def test_bridge_site_cache_on_aliased_hook_z(bridge_pair):
    """The bridge calls hook_z hooks with the canonical point ``attn.o.hook_in``: SiteCache copes."""
    bridge, model = bridge_pair
    ids, mask, types = make_batch()
    names = [f"blocks.{l}.attn.hook_z" for l in (0, 5)]
    a, b = SiteCache(names), SiteCache(names)
    with torch.no_grad():
        bridge.run_with_hooks(ids, attention_mask=mask, token_type_ids=types, fwd_hooks=a.fwd_hooks())
        model.run_with_hooks(ids, attention_mask=mask, token_type_ids=types, fwd_hooks=b.fwd_hooks())
    ga, gb = a.stack(), b.stack()
    for n in names:
        assert ga[n].shape == (4, H, DH)
        assert maxdiff(ga[n], gb[n]) <= TOL


@pytest.mark.requires_tl4(reason="TL 4.x's boot_transformers switches a passed-in hf_model to eager "
                                  "attention; TL 3.9's bridge leaves it on sdpa")
def test_bridge_from_in_memory_model_offline(tmp_path, monkeypatch):
    """``boot_transformers(name, hf_model=..., tokenizer=...)``: no hub, no directory needed.

    The bridge swaps the HF model's submodules for bridge components in place, so HookedBert
    must wrap a copy made *before* booting.
    """
    from transformers import BertTokenizer
    from transformer_lens.model_bridge import TransformerBridge

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    (tmp_path / "vocab.txt").write_text("\n".join(VOCAB) + "\n")
    tok = BertTokenizer(vocab=str(tmp_path / "vocab.txt"))
    hf = make_hf("mlm", seed=5)
    model = HookedBert(copy.deepcopy(hf))
    bridge = TransformerBridge.boot_transformers("tiny-random-bert", hf_model=hf, tokenizer=tok, device="cpu")
    assert hf.config._attn_implementation == "eager"  # the bridge forces eager for hook_pattern
    ids = torch.tensor(tok(["w1 w2 w3 w4", "w5 w6"], padding=True)["input_ids"])
    mask = (ids != 0).long()
    with torch.no_grad():
        got = bridge.run_with_hooks(ids, attention_mask=mask, fwd_hooks=[ablate_head(2, 3)])
        ref = model.run_with_hooks(ids, attention_mask=mask, fwd_hooks=[ablate_head(2, 3)])
    assert maxdiff(got, ref) <= TOL
