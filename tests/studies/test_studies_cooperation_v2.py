"""METHODS v2 §5 at the block sites: cooperation_report on a block readout (MLM: trained on half
of the evaluation items, some classes unseen), the null model beside, against direct calls of
the analysis on the same SiteReadout."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from nodeprobe.analysis import cooperation
from nodeprobe.errors import NodeprobeError
from _v2 import FAST, LOW
from nodeprobe.studies import cooperation_report
from nodeprobe.studies.units import null_readout, site_readout


def _same_rows(lines, res):
    assert [ln.n for ln in lines] == [r.n for r in res.rows]
    for ln, r in zip(lines, res.rows):
        for q in ("acc", "n_learned", "gain", "union_gain", "precision", "inv_outputs", "retained_recall",
                  "learned_per_node"):
            assert (getattr(ln, q), getattr(ln, f"{q}_std")) == (getattr(r, q).mean, getattr(r, q).std)
        assert ln.n_no_union == r.n_no_union and ln.n_subsets == r.n_subsets


@pytest.mark.parametrize("site", ["attn", "mlp"])
def test_block_site_report_is_the_analysis_with_its_null(mlm, site):
    kw = dict(R=3, seed=2, grid=[1, 2, 4, 8, 10_000], **LOW)
    rep = cooperation_report(mlm, site=site, layer=1, readout_settings=FAST, **kw)
    sr = site_readout(mlm, site, 1, settings=FAST)
    # MLM block readout: trained on half, analysed on the other half; classes unseen there exist
    assert sr.n_local == sr.n_rows + 1 and int((sr.y_local == sr.n_rows).sum()) > 0
    th = dict(R=3, seed=2, grid=[1, 2, 4, 8, 10_000], n_classes=sr.n_local, **LOW)
    res = cooperation(sr.W, sr.b, sr.X, sr.y_local, **th)
    nr = null_readout(sr, 2)
    nres = cooperation(nr.W, nr.b, nr.X, nr.y_local, **th)
    _same_rows(rep.rows, res)
    _same_rows(rep.null_rows, nres)
    assert rep.site == site and rep.layer == 1 and rep.readout == sr.describe()
    assert rep.d == rep.d_model == sr.d and rep.grid[-1] == sr.d  # capped at the site's nodes
    assert rep.n_items == sr.y.numel() < mlm.n_items and rep.n_classes == mlm.n_classes
    assert (rep.n_star, rep.crossover_found, rep.p_min_n) == (res.n_star, res.crossover_found, res.p_min_n)
    assert (rep.first_positive_gain, rep.last_positive_gain) == (res.first_positive_gain, res.last_positive_gain)
    assert rep.null == {"n_star": nres.n_star, "crossover_found": nres.crossover_found, "p_min_n": nres.p_min_n,
                        "first_positive_gain": nres.first_positive_gain,
                        "last_positive_gain": nres.last_positive_gain}
    assert rep.n_star is None or rep.grid[0] < rep.n_star < rep.grid[-1]
    assert sum(rep.single_learned_hist.values()) == sr.d
    # the unseen 'class' is never learned: every learned class is a row of the readout
    assert all(max(lam, default=-1) < sr.n_rows for lam in res.single_learned)
    # the same node sets on both sides (same seed, same grid)
    assert [s.nodes for s in res.subsets] == [s.nodes for s in nres.subsets]


def test_classification_block_site_needs_the_train_split_and_null_can_be_off(cls):
    test, train = cls
    with pytest.raises(NodeprobeError, match="train split"):
        cooperation_report(test, site="attn", layer=0, readout_settings=FAST, R=2, grid=[1, 2])
    with pytest.raises(NodeprobeError, match="needs `layer`"):
        cooperation_report(test, site="mlp", R=2, grid=[1, 2])
    rep = cooperation_report(test, site="attn", layer=0, train=train, readout_settings=FAST, null=False, mode="mean",
                             R=2, seed=1, grid=[1, 3, 64], **LOW)
    sr = site_readout(test, "attn", 0, train=train, settings=FAST)
    res = cooperation(sr.W, sr.b, sr.X, sr.y_local, "mean", sr.means(), R=2, seed=1, grid=[1, 3, 64],
                      n_classes=sr.n_local, **LOW)
    _same_rows(rep.rows, res)
    assert rep.null_rows is None and rep.null is None and rep.d == sr.d == test.n_heads * (test.d_model // test.n_heads)
    assert rep.readout["trained_on"] == "train split"


def test_readout_site_keeps_the_v1_layout(cls):
    test, _ = cls
    rep = cooperation_report(test, R=2, seed=0, grid=[1, 2, 4], **LOW)
    res = cooperation(test.W, test.b, test.readout(), test.targets(), R=2, seed=0, grid=[1, 2, 4], **LOW)
    _same_rows(rep.rows, res)
    assert rep.site == "readout" and rep.layer is None and rep.d_model == rep.d == test.d_model
    assert rep.null is not None and len(rep.null_rows) == len(rep.rows)
    assert set(dataclasses.asdict(rep)) >= {"n_star", "crossover_found", "p_min_n", "first_positive_gain",
                                            "last_positive_gain", "null_rows", "null", "readout"}


def test_null_model_keeps_each_class_row_and_is_seeded(mlm):
    sr = site_readout(mlm, "mlp", 0, settings=FAST)
    a, b, c = null_readout(sr, 5), null_readout(sr, 5), null_readout(sr, 6)
    W0 = sr.W.numpy()
    for k in range(W0.shape[0]):  # each class row: the same multiset of weights, other order
        assert sorted(a.W[k].tolist()) == sorted(W0[k].tolist())
    assert not torch.equal(a.W, sr.W)
    assert a.W.numpy().tobytes() == b.W.numpy().tobytes()  # same seed, same bytes
    assert a.W.numpy().tobytes() != c.W.numpy().tobytes()  # another seed, other permutations
    # the permutations are independent per class (not one column permutation for all rows):
    # recover row k's permutation p_k from a.W[k] = W0[k, p_k] (trained weights are distinct)
    assert W0.shape[0] >= 2 and all(np.unique(W0[k]).size == W0.shape[1] for k in range(3))
    perms = [np.array([int(np.flatnonzero(W0[k] == v)[0]) for v in a.W[k].numpy()]) for k in range(3)]
    assert all(np.array_equal(a.W[k].numpy(), W0[k, perms[k]]) for k in range(3))
    assert torch.equal(a.b, sr.b) and torch.equal(a.X, sr.X) and torch.equal(a.y, sr.y)
    assert a.path is None and "permuted" in a.trained_on
    assert any(not np.array_equal(perms[0], p) for p in perms[1:])


# ---------------------------------------------------------------------- rendering and the claim row
def test_report_renders_plots_and_makes_an_honest_claim(cls, tmp_path, capsys):
    import json

    from nodeprobe.render import figures
    from nodeprobe.render.jsonio import dumps, to_jsonable
    from nodeprobe.render.reproduction import _cooperation_claim
    from nodeprobe.render.views import render_cooperation

    test, _ = cls
    rep = cooperation_report(test, R=3, seed=0, grid=[1, 2, 4, 16], **LOW)
    render_cooperation(rep)
    out = capsys.readouterr().out
    assert "crossover" in out and "retired v1" in out and "Null model" in out and "Rt" in out and "Rg" in out
    if rep.n_star is None:
        assert "no crossover in the grid" in out and "n* = 1" not in out
    else:
        assert f"n* = {rep.n_star}" in out
    js = json.loads(dumps(to_jsonable(rep)))
    assert js["null"]["n_star"] == rep.null["n_star"] and "retained_recall" in js["rows"][0]
    paths = figures.cooperation(rep, tmp_path, "tiny")
    names = {p.name for p in paths}
    import importlib.util

    if importlib.util.find_spec("matplotlib") is None:
        assert paths == []
    else:
        assert names == {"cooperation_precision.png", "cooperation_gain.png", "cooperation_retained.png"}
        assert all(p.is_file() and p.stat().st_size > 0 for p in paths)
    claim = _cooperation_claim(js, "BERT", "c.json")
    assert claim.verdict in ("reproduced", "not reproduced") and "null model" in claim.measured
    # verdicts: a crossover and G above the null → reproduced; otherwise not, and never "n* = 1"
    rows = [{"n": 1, "gain": 0.0}, {"n": 4, "gain": 2.0}, {"n": 16, "gain": -3.0}]
    null = [{"n": 1, "gain": 0.0}, {"n": 4, "gain": 0.5}, {"n": 16, "gain": -4.0}]
    base = dict(rows=rows, null_rows=null, first_positive_gain=4, last_positive_gain=4)
    yes = _cooperation_claim({**base, "n_star": 4, "crossover_found": True}, "BERT", "c.json")
    assert yes.verdict == "reproduced" and "crossover at n* = 4" in yes.measured and "null model 0.50" in yes.measured
    no_cross = _cooperation_claim({**base, "n_star": None, "crossover_found": False}, "BERT", "c.json")
    assert no_cross.verdict == "not reproduced" and "no crossover in the grid" in no_cross.measured
    below_null = _cooperation_claim({**base, "n_star": 4, "crossover_found": True,
                                     "null_rows": [{**x, "gain": 5.0} for x in null]}, "BERT", "c.json")
    assert below_null.verdict == "not reproduced"
    v1 = _cooperation_claim({"rows": rows, "n_star": 1, "first_positive_gain": 4}, "BERT", "c.json")
    assert v1.verdict == "not reproduced" and "n* = 1" not in v1.measured
