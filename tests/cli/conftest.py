"""Fixtures of the CLI tests."""

import pytest


@pytest.fixture(scope="module")
def fewrel_once():
    """Tokenise FewRel once per module (~3 s a time on a busy CPU); every command still builds its
    evaluation set, cache and report for real from the (memoised) splits.  Modules opt in with
    ``pytestmark = pytest.mark.usefixtures("fewrel_once")``."""
    import nodeprobe.data.tasks as tasks

    real = tasks.classification_splits
    memo = {}

    def memoised(task, data, tokenizer, **kw):
        key = (task, str(data), tokenizer.vocab_size, tuple(sorted(kw.items())))
        if key not in memo:
            memo[key] = real(task, data, tokenizer, **kw)
        return memo[key]

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(tasks, "classification_splits", memoised)
        yield
