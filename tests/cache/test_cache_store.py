"""nodeprobe.cache: streamed shards equal run_with_cache; manifests refuse other models/data;
interrupted builds are rebuilt; reuse, site unions and derived results."""

from __future__ import annotations

import copy
import json

import pytest
import torch

from _tiny_models import tiny_eval_set, tiny_model
from nodeprobe.cache import (
    build_cache,
    cache_is_current,
    get_or_build_cache,
    load_cache,
    model_fingerprint,
    parse_sites,
    site_means,
)
from nodeprobe.errors import NodeprobeError



@pytest.fixture(scope="module")
def cls_setup():
    return tiny_model("cls"), tiny_eval_set("cls")


@pytest.fixture(scope="module")
def mlm_setup():
    return tiny_model("mlm"), tiny_eval_set("mlm")


def _reference(model, es):
    """Per-site tensors from HookedBert.run_with_cache, sliced at [CLS] / modified positions."""
    L = model.spec.n_layers
    out = {k: [] for k in ["readout", "targets"] + [f"z.{l}" for l in range(L)] + [f"resid.{b}" for b in range(L + 1)]}
    for b in es.batches:
        # no pattern/score hooks: those switch attention to the eager kernel, and no LayerNorm
        # scale/normalized hooks: those switch LayerNorm to the unfused form (neither bit-identical)
        logits, c = model.run_with_cache(b.input_ids, b.attention_mask, positions=b.positions,
                                         names_filter=lambda n: not n.endswith(("hook_pattern", "hook_attn_scores",
                                                                                "hook_scale", "hook_normalized")))
        if b.positions is None:
            sel = lambda t: t[:, 0]  # noqa: E731
        else:
            sel = lambda t: t[b.positions]  # noqa: E731
        out["readout"].append(c["readout.hook_in"])
        for l in range(L):
            out[f"z.{l}"].append(sel(c[f"blocks.{l}.attn.hook_z"]))
            out[f"resid.{l + 1}"].append(sel(c[f"blocks.{l}.hook_normalized_resid_post"]))
        out["resid.0"].append(sel(c["hook_full_embed"]))
        out["targets"].append(b.targets)
    return {k: torch.cat(v) for k, v in out.items()}


@pytest.mark.parametrize("task", ["cls", "mlm"])
def test_cached_sites_equal_run_with_cache(task, cls_setup, mlm_setup, tmp_path):
    model, es = cls_setup if task == "cls" else mlm_setup
    reader = build_cache(model, es, "readout,z,resid", tmp_path / "c", shard_batches=2)
    m = json.loads((tmp_path / "c" / "manifest.json").read_text())
    assert len(m["shards"]) == 2 and [s["n_items"] for s in m["shards"]] == [
        sum(int(b.targets.numel()) for b in es.batches[:2]), int(es.batches[2].targets.numel())]
    ref = _reference(model, es)
    N = es.n_items
    assert reader.n_items == N and reader.readout().shape == (N, model.spec.d_model)
    torch.testing.assert_close(reader.readout(), ref["readout"], rtol=0, atol=0)
    for l in range(model.spec.n_layers):
        torch.testing.assert_close(reader.z(l), ref[f"z.{l}"], rtol=0, atol=0)
    for b in range(model.spec.n_layers + 1):
        torch.testing.assert_close(reader.resid(b), ref[f"resid.{b}"], rtol=0, atol=0)
    assert torch.equal(reader.targets(), ref["targets"])
    W, bias = model.readout_weights()
    assert torch.equal(reader.W, W) and torch.equal(reader.b, bias)
    assert torch.equal(reader.preds(), (ref["readout"] @ W.T + bias).argmax(-1))
    assert reader.class_names == es.class_names
    assert m["model_fingerprint"] == model_fingerprint(model) and m["eval_fingerprint"] == es.fingerprint
    assert m["shapes"]["z.0"] == [N, model.spec.n_heads, model.spec.d_head]
    assert m["task"] == es.task and m["seed"] == es.seed and m["dtype"] == "float32"
    # streaming: one shard at a time, in item order
    parts = list(reader.iter_shards(["readout"]))
    assert len(parts) == 2 and torch.equal(torch.cat([p["readout"] for p in parts]), reader.readout())
    torch.testing.assert_close(site_means(reader, "readout"), ref["readout"].double().mean(0).float())


def test_refused_after_one_weight_changes(cls_setup, tmp_path):
    model, es = cls_setup
    d = tmp_path / "c"
    get_or_build_cache(model, es, "readout", d)
    other = copy.deepcopy(model)
    with torch.no_grad():
        other.hf.bert.encoder.layer[1].attention.self.query.weight[3, 5] += 1e-3
    assert model_fingerprint(other) != model_fingerprint(model)
    before = (d / "manifest.json").read_text()
    with pytest.raises(NodeprobeError, match=r"built from another model \(fingerprint [0-9a-f]+≠[0-9a-f]+\); rebuild with `rebuild` or another `cache`"):
        load_cache(d, other)
    with pytest.raises(NodeprobeError, match="another model"):
        get_or_build_cache(other, es, "readout", d)
    assert (d / "manifest.json").read_text() == before  # refused: nothing rewritten
    assert cache_is_current(d, model, es) and not cache_is_current(d, other, es)
    r = get_or_build_cache(other, es, "readout", d, rebuild=True)
    assert r.built and r.model_fingerprint == model_fingerprint(other)
    assert cache_is_current(d, other, es) and not cache_is_current(d, model, es)


def test_refused_after_data_changes(cls_setup, tmp_path):
    model, es = cls_setup
    d = tmp_path / "c"
    get_or_build_cache(model, es, "readout", d)
    es2 = tiny_eval_set("cls", seed=7)
    with pytest.raises(NodeprobeError, match="built from other data"):
        load_cache(d, model, es2)
    with pytest.raises(NodeprobeError, match="other data"):
        get_or_build_cache(model, es2, "readout", d)
    assert cache_is_current(d, model, es) and not cache_is_current(d, model, es2)
    assert not cache_is_current(tmp_path / "nothing", model, es)


def test_interrupted_build_is_rebuilt(cls_setup, tmp_path, monkeypatch):
    import nodeprobe.evaluate as ev

    model, es = cls_setup
    d = tmp_path / "c"
    real = ev.run_eval
    calls = []

    def flaky(*a, **k):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*a, **k)

    monkeypatch.setattr(ev, "run_eval", flaky)
    with pytest.raises(KeyboardInterrupt):
        build_cache(model, es, "readout", d, shard_batches=1)
    monkeypatch.setattr(ev, "run_eval", real)
    assert (d / "shard-00000.safetensors").is_file() and not (d / "manifest.json").exists()
    with pytest.raises(NodeprobeError, match="no manifest"):
        load_cache(d, model, es)
    r = get_or_build_cache(model, es, "readout", d)
    assert r.built and r.n_items == es.n_items and (d / "manifest.json").is_file()


def test_reuse_default_location_and_site_union(cls_setup, tmp_path):
    model, es = cls_setup
    r1 = get_or_build_cache(model, es, "readout", root=tmp_path)
    assert r1.built and r1.path == tmp_path / f"{model_fingerprint(model)}-{es.fingerprint}"
    r2 = get_or_build_cache(model, es, "readout", root=tmp_path)
    assert not r2.built and r2.path == r1.path
    with pytest.raises(NodeprobeError, match="no 'z' site"):
        r2.z(0)
    r3 = get_or_build_cache(model, es, ["z"], root=tmp_path)  # missing site: rebuilt with the union
    assert r3.built and r3.sites == ("readout", "z")
    calls = []
    got = r3.derived("demo", lambda: calls.append(1) or {"x": torch.arange(3)})
    again = r3.derived("demo", lambda: calls.append(1) or {"x": torch.zeros(3)})
    assert calls == [1] and torch.equal(got["x"], again["x"])
    r4 = get_or_build_cache(model, es, "readout", root=tmp_path, rebuild=True)
    assert not (r4.path / "derived").exists()  # a rebuild drops derived results


def test_fingerprint_sees_every_tensor(cls_setup):
    model, _ = cls_setup
    fp = model_fingerprint(model)
    assert model_fingerprint(copy.deepcopy(model)) == fp
    g = torch.Generator().manual_seed(0)
    for name, p in list(model.hf.named_parameters())[::5]:
        other = copy.deepcopy(model)
        q = dict(other.hf.named_parameters())[name]
        i = int(torch.randint(0, q.numel(), (1,), generator=g))
        with torch.no_grad():
            q.view(-1)[i] += 0.01
        assert model_fingerprint(other) != fp, name


def test_bad_inputs(cls_setup, tmp_path):
    model, es = cls_setup
    with pytest.raises(NodeprobeError, match="sites="):
        parse_sites("readout,attn")
    with pytest.raises(NodeprobeError, match="sites="):
        parse_sites("")
    with pytest.raises(NodeprobeError, match="dtype="):
        build_cache(model, es, "readout", tmp_path / "c", dtype="int8")
    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(NodeprobeError, match="is a file"):
        get_or_build_cache(model, es, "readout", f)
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    with pytest.raises(NodeprobeError, match="not a nodeprobe cache"):
        get_or_build_cache(model, es, "readout", tmp_path / "mine")
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "manifest.json").write_text("{not json")
    with pytest.raises(NodeprobeError, match="unreadable manifest"):
        load_cache(tmp_path / "bad")


def test_build_refuses_bad_arguments_before_writing(cls_setup, tmp_path):
    model, es = cls_setup
    out = tmp_path / "c"
    with pytest.raises(NodeprobeError, match="shard_batches=0"):
        build_cache(model, es, "readout", out, shard_batches=0)
    with pytest.raises(NodeprobeError, match="dtype"):
        build_cache(model, es, "readout", out, dtype=torch.int8)
    assert not out.exists()                                   # nothing written for a refused call
    (tmp_path / "file").write_text("x")
    with pytest.raises(NodeprobeError, match="is a file"):
        build_cache(model, es, "readout", tmp_path / "file")
    reader = build_cache(model, es, "readout", out, dtype=torch.float16)   # a torch dtype is accepted too
    assert reader.manifest["dtype"] == "float16" and load_cache(out).manifest == reader.manifest
    assert reader.readout().shape == (reader.n_items, reader.d_model)


# ---------------------------------------------------------------------- damaged caches, the lock
def _built(cls_setup, path):
    model, es = cls_setup
    build_cache(model, es, "readout", path, shard_batches=1)
    return model, es


def test_truncated_shard_is_reported_as_damaged_not_rebuilt(cls_setup, tmp_path):
    model, es = _built(cls_setup, tmp_path / "c")
    shard = tmp_path / "c" / "shard-00001.safetensors"
    data = shard.read_bytes()
    shard.write_bytes(data[: len(data) - 10])
    for call in (lambda: load_cache(tmp_path / "c"), lambda: get_or_build_cache(model, es, "readout", tmp_path / "c")):
        with pytest.raises(NodeprobeError) as e:
            call()
        msg = str(e.value)
        assert "\n" not in msg and str(shard) in msg and "truncated" in msg and "`rebuild`" in msg
    assert shard.read_bytes() == data[: len(data) - 10]  # not silently rebuilt
    reader = get_or_build_cache(model, es, "readout", tmp_path / "c", rebuild=True, shard_batches=1)
    assert reader.built and shard.read_bytes() == data


def test_manifest_missing_a_key_is_reported_as_damaged(cls_setup, tmp_path):
    model, es = _built(cls_setup, tmp_path / "c")
    mf = tmp_path / "c" / "manifest.json"
    m = json.loads(mf.read_text())
    del m["shapes"]
    mf.write_text(json.dumps(m))
    with pytest.raises(NodeprobeError, match=r"manifest\.json is damaged .*no 'shapes' key.*`rebuild`"):
        get_or_build_cache(model, es, "readout", tmp_path / "c")
    assert "shapes" not in json.loads(mf.read_text())
    assert "shapes" in get_or_build_cache(model, es, "readout", tmp_path / "c", rebuild=True).manifest


@pytest.mark.parametrize("edit,said", [
    (lambda m: m.update(n_items=-5), "n_items=-5; expected a positive integer"),
    (lambda m: m.update(n_items=m["n_items"] + 1), "its shards hold"),
    (lambda m: m["shards"][0].update(file="../../etc/passwd"), "file='../../etc/passwd' is not a file name inside the cache"),
    (lambda m: m["shards"][0].update(file="/etc/passwd"), "is not a file name inside the cache"),
    (lambda m: m.update(readout_file="../model.safetensors"), "readout_file='../model.safetensors' is not a file name"),
], ids=["n-items-negative", "n-items-not-the-shards", "shard-outside", "shard-absolute", "readout-outside"])
def test_manifest_values_are_checked_before_any_file_is_opened(cls_setup, tmp_path, edit, said):
    _built(cls_setup, tmp_path / "c")
    mf = tmp_path / "c" / "manifest.json"
    m = json.loads(mf.read_text())
    edit(m)
    mf.write_text(json.dumps(m))
    with pytest.raises(NodeprobeError) as e:
        load_cache(tmp_path / "c")
    assert f"cache file {mf} is damaged (unreadable manifest: " in str(e.value) and said in str(e.value)


def test_shard_without_a_listed_tensor_is_damaged(cls_setup, tmp_path):
    from safetensors.torch import save_file

    _built(cls_setup, tmp_path / "c")
    save_file({"readout": torch.zeros(2, 3)}, str(tmp_path / "c" / "shard-00000.safetensors"))
    with pytest.raises(NodeprobeError, match=r"shard-00000\.safetensors is damaged \(no tensor 'loss'"):
        load_cache(tmp_path / "c")


def test_a_shard_gone_or_replaced_by_a_folder_is_named_so(cls_setup, tmp_path):
    _built(cls_setup, tmp_path / "c")
    shard = tmp_path / "c" / "shard-00001.safetensors"
    shard.unlink()
    with pytest.raises(NodeprobeError, match=r"is incomplete \(shard-00001\.safetensors is missing\); rebuild"):
        load_cache(tmp_path / "c")
    shard.mkdir()
    with pytest.raises(NodeprobeError, match=r"is incomplete \(shard-00001\.safetensors is not a file\); rebuild"):
        load_cache(tmp_path / "c")


def test_class_names_that_do_not_fit_the_readout_are_damaged(cls_setup, tmp_path):
    _built(cls_setup, tmp_path / "c")
    names = tmp_path / "c" / "classes.json"
    k = len(json.loads(names.read_text()))
    names.write_text(json.dumps(["a", "b", "c"]))
    with pytest.raises(NodeprobeError, match=rf"classes\.json is damaged \(3 class names for a readout of {k} classes\)"):
        load_cache(tmp_path / "c")
    names.write_text(json.dumps([str(i) for i in range(k)]))
    mf = tmp_path / "c" / "manifest.json"
    m = json.loads(mf.read_text())
    mf.write_text(json.dumps(dict(m, n_classes=3)))
    with pytest.raises(NodeprobeError, match=rf"manifest\.json is damaged \(n_classes=3, but classes\.json names {k}"):
        load_cache(tmp_path / "c")
    mf.write_text(json.dumps(m))
    names.write_text(json.dumps([1] * k))
    with pytest.raises(NodeprobeError, match=r"classes\.json is damaged \(not a JSON list of class names\)"):
        load_cache(tmp_path / "c")


def test_a_cache_held_by_a_live_process_is_refused(cls_setup, tmp_path):
    model, es = cls_setup
    d = tmp_path / "c"
    d.mkdir()
    lock = d / ".nodeprobe.lock"
    lock.write_text(json.dumps({"pid": 1, "host": __import__("socket").gethostname(), "since": "then"}))
    with pytest.raises(NodeprobeError, match=r"cache=.*: in use by another nodeprobe process \(pid 1, since then\)"):
        get_or_build_cache(model, es, "readout", d)
    assert sorted(p.name for p in d.iterdir()) == [".nodeprobe.lock"]  # nothing written
    lock.unlink()
    reader = get_or_build_cache(model, es, "readout", d)
    assert reader.built and not lock.exists()
    assert "bytes" in reader.describe()


def test_a_complete_cache_another_process_is_rewriting_is_not_read(cls_setup, tmp_path):
    """A reader of a built cache refuses while a live other process holds its lock (a --rebuild in
    progress), and reads it once the writer is gone (a dead pid's lock is stale)."""
    import os
    import socket
    import subprocess
    import sys

    model, es = _built(cls_setup, tmp_path / "c")
    lock = tmp_path / "c" / ".nodeprobe.lock"
    lock.write_text(json.dumps({"pid": os.getppid(), "host": socket.gethostname(), "since": "now"}))
    for call in (lambda: load_cache(tmp_path / "c"), lambda: get_or_build_cache(model, es, "readout", tmp_path / "c")):
        with pytest.raises(NodeprobeError, match=r"cache=.*: being written by another nodeprobe process "
                                                   rf"\(pid {os.getppid()}, since now\); wait for it"):
            call()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    lock.write_text(json.dumps({"pid": dead.pid, "host": socket.gethostname(), "since": "then"}))
    reader = get_or_build_cache(model, es, "readout", tmp_path / "c")
    assert not reader.built and reader.n_items == es.n_items
