"""The report commands end to end through ``nodeprobe.cli.main`` on tiny saved models:
JSON that parses for every command; bad input → one line on stderr, exit 2, nothing written."""

from __future__ import annotations

import json
import shutil

import pytest

from _small_data import small_data_copy
from _tiny_models import tiny_hf
from nodeprobe.cli import main

LIMIT = ["--limit", "48"]



pytestmark = pytest.mark.usefixtures("fewrel_once")  # tests/cli/conftest.py


def _save(hf, out, vocab):
    hf.save_pretrained(out)
    shutil.copy(vocab, out / "vocab.txt")
    return out


@pytest.fixture(scope="module")
def models(tmp_path_factory, shared_data):
    """Tiny random classifier (16 FewRel relations) and masked LM, with the bert-base-uncased vocab."""
    root = tmp_path_factory.mktemp("models")
    vocab = shared_data / "tokenizer" / "bert-base-uncased-vocab.txt"
    return {
        "cls": _save(tiny_hf("cls", seed=0, vocab_size=30522, num_labels=16), root / "cls", vocab),
        "cls2": _save(tiny_hf("cls", seed=1, vocab_size=30522, num_labels=16), root / "cls2", vocab),
        "mlm": _save(tiny_hf("mlm", seed=0, vocab_size=30522), root / "mlm", vocab),
    }


@pytest.fixture(scope="module")
def mlm_data(tmp_path_factory, shared_data):
    """A small pre-training corpus in the shared-data layout (heads of the real files)."""
    return small_data_copy(tmp_path_factory.mktemp("mlmdata"), shared_data, dbpedia_rows=20)


def run(capsys, *args) -> tuple[int, str, str]:
    capsys.readouterr()
    rc = main([str(a) for a in args])
    out = capsys.readouterr()
    return rc, out.out, out.err


def load_json(path):
    d = json.loads(path.read_text())
    assert set(d) == {"schema", "settings", "result"}
    return d


def test_cache_then_reports_reuse_it(models, shared_data, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    common = ["--model", models["cls"], "--data", shared_data, *LIMIT]
    rc, out, err = run(capsys, "cache", *common, "--sites", "readout,z,resid", "--json", tmp_path / "cache.json")
    assert rc == 0, err
    c = load_json(tmp_path / "cache.json")
    assert c["schema"] == "nodeprobe.cache/1" and c["result"]["built"] and c["result"]["n_items"] == 48
    cache_dir = tmp_path / c["result"]["path"]
    assert cache_dir.parent == tmp_path / "runs" / "cache" and (cache_dir / "manifest.json").is_file()

    rc, out, err = run(capsys, "specialization", *common, "--json", tmp_path / "spec.json", "--plot", tmp_path / "plots",
                       "--tau-recall", "0.2", "--tau-lift", "1.0", "--min-count", "2", "--unit", "3")
    assert rc == 0, err
    s = load_json(tmp_path / "spec.json")
    assert s["schema"] == "nodeprobe.specialization/1" and s["settings"]["cache"] == c["result"]["path"]
    r = s["result"]
    assert r["level"] == "node" and r["site"] == "readout" and len(r["units"]) == 16 and r["n_classes"] == 16
    assert {"acc", "n_outputs", "n_learned", "snr", "learned", "learned_names"} <= set(r["units"][0])
    assert r["families"][0]["n_units"] == 16
    assert "Unit node 3" in out and "Symmetry breaking" in out
    assert (tmp_path / "plots" / "specialization_lambda_hist.png").is_file()
    assert sorted(p.name for p in (tmp_path / "runs" / "cache").iterdir()) == [cache_dir.name]  # reused

    rc, out, err = run(capsys, "specialization", *common, "--level", "head", "--layer", "1", "--json", tmp_path / "h.json",
                       "--unit", "L1H2", "--top", "2")
    assert rc == 0, err
    h = load_json(tmp_path / "h.json")["result"]
    assert [u["unit"] for u in h["units"]] == [f"L1H{i}" for i in range(4)] and h["layers"] == [1]
    assert h["head_unit"] == "group" and [p.name.startswith("block-readout-attn-L1-")
                                          for p in (cache_dir / "derived").iterdir()] == [True]
    assert (cache_dir.parent / f"{cache_dir.name}-train" / "manifest.json").is_file()  # the readout's train split

    rc, out, err = run(capsys, "specialization", *common, "--level", "head", "--layer", "1", "--head-unit", "network",
                       "--json", tmp_path / "h1.json")
    assert rc == 0, err
    assert load_json(tmp_path / "h1.json")["result"]["head_unit"] == "network"
    assert (cache_dir / "derived" / "heads-isolate-zero-L1.safetensors").is_file()

    rc, out, err = run(capsys, "specialization", *common, "--site", "resid", "--layer", "0", "--mode", "mean",
                       "--json", tmp_path / "r.json")
    assert rc == 0, err
    assert load_json(tmp_path / "r.json")["result"]["families"][0]["name"] == "resid nodes of block 0"
    rc, out, err = run(capsys, "specialization", *common, "--site", "resid", "--layer", "0", "--resid-readout", "lens",
                       "--json", tmp_path / "r1.json")
    assert rc == 0, err
    assert load_json(tmp_path / "r1.json")["result"]["families"][0]["name"] == "resid nodes of block 0 (lens)"


def test_cooperation_hull_blocks(models, shared_data, tmp_path, capsys):
    common = ["--model", models["cls"], "--data", shared_data, *LIMIT, "--cache", tmp_path / "c"]
    rc, out, err = run(capsys, "cooperation", *common, "--R", "3", "--grid", "1,2,4,16", "--json", tmp_path / "co.json",
                       "--plot", tmp_path / "p")
    assert rc == 0, err
    co = load_json(tmp_path / "co.json")["result"]
    assert [r["n"] for r in co["rows"]] == [1, 2, 4, 16] and co["R"] == 3 and "n_star" in co
    assert (tmp_path / "p" / "cooperation_gain.png").is_file()

    rc, out, err = run(capsys, "hull", *common, "--n", "1", "--top", "3", "--unit", "5", "--json", tmp_path / "h1.json",
                       "--plot", tmp_path / "p")
    assert rc == 0, err
    h1 = load_json(tmp_path / "h1.json")["result"]
    assert h1["kind"] == "single" and len(h1["rows"]) == 16 and len(h1["farthest_below"]) == 3
    assert all(r["acc"] <= r["ub_data"] + 1e-9 <= r["ub_unbounded"] + 2e-9 for r in h1["rows"])

    rc, out, err = run(capsys, "hull", *common, "--nodes", "12,4", "--json", tmp_path / "h2.json")
    assert rc == 0, err
    h2 = load_json(tmp_path / "h2.json")["result"]
    assert h2["kind"] == "set" and h2["rows"][0]["nodes"] == [12, 4] and isinstance(h2["reachable_data"], list)

    rc, out, err = run(capsys, "blocks", *common, "--probe-epochs", "3", "--json", tmp_path / "b.json", "--plot", tmp_path / "p")
    assert rc == 0, err
    b = load_json(tmp_path / "b.json")["result"]
    assert [r["name"] for r in b["rows"]] == ["embeddings", "block 0", "block 1"]
    assert b["rows"][-1]["lens_accuracy"] == pytest.approx(b["baseline_accuracy"])


def test_apt(models, mlm_data, tmp_path, capsys):
    rc, out, err = run(capsys, "apt", "--model", models["mlm"], "--data", mlm_data, "--cache", tmp_path / "c",
                       "--min-count", "2", "--probe", "--probe-epochs", "2", "--json", tmp_path / "apt.json",
                       "--plot", tmp_path / "p")
    assert rc == 0, err
    a = load_json(tmp_path / "apt.json")
    r = a["result"]
    assert a["schema"] == "nodeprobe.apt/1" and r["n_items"] > 0 and len(r["blocks"]) == 3
    assert r["blocks"][-1]["accuracy"] == pytest.approx(r["accuracy"])
    assert {"id", "token", "count", "apt", "corpus_count"} <= set(r["tokens"][0])
    assert (tmp_path / "p" / "apt_vs_frequency.png").is_file()


BAD = [
    (["specialization", "--level", "neuron"], "--level neuron"),
    (["specialization", "--site", "z"], "--site z holds heads"),
    (["specialization", "--head-unit", "single", "--level", "head"], "--head-unit single"),
    (["specialization", "--resid-readout", "probe", "--site", "resid"], "--resid-readout probe"),
    (["specialization", "--site", "resid", "--layer", "9"], "--layer 9"),
    (["specialization", "--level", "head", "--site", "readout"], "--level head"),
    (["specialization", "--tau-recall", "1.5"], "--tau-recall"),
    (["specialization", "--tau-lift", "-1"], "--tau-lift"),
    (["specialization", "--min-count", "0"], "--min-count"),
    (["specialization", "--mode", "median"], "--mode median"),
    (["specialization", "--level", "head", "--unit", "L9H0"], "--unit L9H0"),
    (["specialization", "--layer", "1"], "--layer applies"),
    (["hull", "--nodes", "1,99"], "--nodes 99"),
    (["hull", "--level", "head", "--site", "mlp", "--layer", "0"], "--level head lives at --site attn"),
    (["hull", "--level", "head", "--site", "attn"], "--level head needs --layer"),
    (["hull", "--site", "mlp", "--n", "1"], "--site mlp needs --layer"),
    (["hull", "--site", "mlp", "--layer", "0", "--n", "1", "--unit", "40"], "--unit 40: --site mlp has nodes 0–31"),
    (["specialization", "--site", "mlp", "--unit", "3"], "every block is studied"),
    (["hull", "--site", "attn", "--layer", "7", "--n", "1"], "--layer 7"),
    (["hull", "--nodes", ","], "empty"),
    (["hull", "--nodes", "3,3"], "repeated"),
    (["hull", "--n", "0"], "--n 0"),
    (["hull", "--n", "17"], "--n 17"),
    (["hull"], "either --nodes"),
    (["hull", "--n", "1", "--nodes", "2"], "either --nodes"),
    (["cooperation", "--grid", "0,1"], "--grid"),
    (["cooperation", "--R", "0"], "--R 0"),
    (["cooperation", "--site", "mlp"], "--site mlp needs --layer"),
    (["cooperation", "--site", "heads", "--layer", "0"], "--site heads"),
    (["apt", "--task", "fewrel"], "APT is a masked-LM metric"),
    (["cache", "--sites", "readout,attn"], "--sites"),
    (["blocks", "--probe-fraction", "1.5"], "--probe-fraction"),
    (["blocks", "--text-file", "some.txt"], "--text-file some.txt: evaluates masked-LM text; allowed only with --task mlm"),
    (["apt", "--task", "mlm", "--text-file", "/nonexistent/none.txt"], "--text-file /nonexistent/none.txt: not found"),
]


@pytest.mark.parametrize("args,msg", BAD, ids=[" ".join(a) for a, _ in BAD])
def test_bad_input_one_line_exit_2_nothing_written(args, msg, models, shared_data, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cmd, rest = args[0], args[1:]
    extra = [] if cmd == "cache" else ["--json", tmp_path / "out.json", "--plot", tmp_path / "plots"]
    if cmd == "cache":
        extra = ["--json", tmp_path / "out.json"]
    rc, out, err = run(capsys, cmd, "--model", models["cls"], "--data", shared_data, *LIMIT, *rest, *extra)
    assert rc == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("nodeprobe: error: ") and msg in lines[0], err
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # no JSON, no plots, no cache


def test_mismatched_cache_refused(models, shared_data, tmp_path, capsys):
    cache = tmp_path / "c"
    rc, _, err = run(capsys, "cache", "--model", models["cls"], "--data", shared_data, *LIMIT, "--sites", "readout",
                     "--out", cache)
    assert rc == 0, err
    before = (cache / "manifest.json").read_text()
    for model, limit, what in ((models["cls2"], "48", "another model"), (models["cls"], "40", "other data")):
        rc, out, err = run(capsys, "hull", "--model", model, "--data", shared_data, "--limit", limit, "--n", "1",
                           "--cache", cache, "--json", tmp_path / "h.json")
        assert rc == 2 and len(err.strip().splitlines()) == 1 and what in err and "--rebuild" in err
        assert not (tmp_path / "h.json").exists() and (cache / "manifest.json").read_text() == before
    rc, _, err = run(capsys, "hull", "--model", models["cls2"], "--data", shared_data, *LIMIT, "--n", "1",
                     "--cache", cache, "--rebuild", "--json", tmp_path / "h.json")
    assert rc == 0, err and (tmp_path / "h.json").is_file()


def test_v2_sites_end_to_end(models, shared_data, tmp_path, capsys):
    """METHODS v2 through the CLI: heads as node groups at attn (learned labels recomputable from the
    stored block readout with numpy alone), FF nodes along the blocks, hull of every head."""
    import numpy as np
    from safetensors.numpy import load_file

    common = ["--model", models["cls"], "--data", shared_data, *LIMIT, "--cache", tmp_path / "c"]
    rc, out, err = run(capsys, "specialization", *common, "--site", "attn", "--layer", "1", "--level", "head",
                       "--json", tmp_path / "h.json", "--readout-epochs", "3")
    assert rc == 0, err
    r = load_json(tmp_path / "h.json")["result"]
    assert r["site"] == "attn" and r["head_unit"] == "group" and [u["unit"] for u in r["units"]] == [f"L1H{h}" for h in range(4)]
    ro = r["readouts"][0]
    assert ro["trained_on"] == "train split" and "block readout attn L1" in out
    st = load_file(ro["path"])
    z = np.concatenate([load_file(str(p))["z.1"] for p in sorted((tmp_path / "c").glob("shard-*.safetensors"))])
    z = z.reshape(z.shape[0], -1)
    y = np.concatenate([load_file(str(p))["targets"] for p in sorted((tmp_path / "c").glob("shard-*.safetensors"))])
    dh = z.shape[1] // 4
    for h, u in enumerate(r["units"]):
        c = slice(h * dh, (h + 1) * dh)
        pred = st["classes"][np.argmax(z[:, c] @ st["W"][:, c].T + st["b"], axis=1)]
        assert u["acc"] == pytest.approx(float((pred == y).mean()), abs=1e-6)

    rc, out, err = run(capsys, "specialization", *common, "--site", "mlp", "--json", tmp_path / "m.json",
                       "--readout-epochs", "3")
    assert rc == 0, err
    m = load_json(tmp_path / "m.json")["result"]
    assert [f["layer"] for f in m["families"]] == [0, 1] and m["trends"][0]["kind"] == "mlp nodes"
    assert "Along the blocks" in out

    rc, out, err = run(capsys, "cooperation", *common, "--site", "mlp", "--layer", "1", "--grid", "1,2,4,8",
                       "--R", "3", "--json", tmp_path / "co.json", "--readout-epochs", "3")
    assert rc == 0, err
    co = load_json(tmp_path / "co.json")
    assert co["result"]["site"] == "mlp" and co["result"]["null_rows"] and co["settings"]["null"] is True
    assert ("n* =" in out) or ("no crossover in the grid" in out)

    rc, out, err = run(capsys, "hull", *common, "--site", "attn", "--layer", "1", "--level", "head",
                       "--json", tmp_path / "hh.json", "--readout-epochs", "3")
    assert rc == 0, err
    hh = load_json(tmp_path / "hh.json")["result"]
    assert hh["kind"] == "heads" and [row["unit"] for row in hh["rows"]] == [f"L1H{h}" for h in range(4)]
    assert all(row["acc"] <= row["ub_data"] + 1e-12 for row in hh["rows"])


def test_apt_on_a_text_column_of_your_own_table(tmp_path):
    """`apt --dataset T --text-column C`: the MLM text is that column (frequencies stay the corpus's),
    the same items and accuracy as run_eval over load_eval_set of the same UserData."""
    import csv

    from _families import save_family, sentences
    from nodeprobe.cli import main
    from nodeprobe.data.eval_sets import load_eval_set
    from nodeprobe.data.user import UserData
    from nodeprobe.evaluate import run_eval
    from nodeprobe.model import load_with_tokenizer

    d = save_family(tmp_path, "roberta", "mlm")
    table = tmp_path / "notes.csv"
    with table.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["body", "label"])
        w.writerows((t, "x") for t in sentences(40, seed=1))
    js = tmp_path / "apt.json"
    assert main(["apt", "--model", str(d), "--dataset", str(table), "--text-column", "body", "--min-count", "1",
                 "--json", str(js)]) == 0
    r = json.loads(js.read_text())
    m, tok = load_with_tokenizer(d, "mlm")
    es = load_eval_set("mlm", tok, UserData(table, text_column="body"), max_len=min(128, m.spec.max_len))
    assert r["result"]["n_items"] == es.n_items > 0
    assert r["result"]["accuracy"] == pytest.approx(run_eval(m, es).accuracy, abs=1e-6)
    assert r["settings"]["dataset"]["text_column"] == "body"
    assert main(["apt", "--model", str(d), "--dataset", str(table), "--text-column", "nope"]) == 2
