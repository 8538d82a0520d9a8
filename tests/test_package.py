"""The public package: lazy (``import nodeprobe`` imports no torch), every public name and subpackage
reachable as an attribute, ``dir()`` lists exactly the public surface."""

import subprocess
import sys


def _run(code: str) -> str:
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stdout


def test_lazy_names_and_subpackages():
    out = _run(
        "import sys, nodeprobe\n"
        "assert 'torch' not in sys.modules\n"
        "assert nodeprobe.analysis.learned_set and nodeprobe.model.HookedBert is nodeprobe.HookedBert\n"
        "assert callable(nodeprobe.cooperation)  # the function, not the study module\n"
        "assert all(getattr(nodeprobe, n) is not None for n in nodeprobe.__all__)\n"
        "assert all(getattr(nodeprobe, n).__name__ == 'nodeprobe.' + n for n in nodeprobe.SUBMODULES)\n"
        "d = dir(nodeprobe)\n"
        "assert set(nodeprobe.__all__) <= set(d) and not {'importlib', 'TYPE_CHECKING', '_LAZY'} & set(d)\n"
        "print('ok')\n")
    assert out.strip() == "ok"
