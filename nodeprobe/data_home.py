"""Where nodeprobe's data lives when no ``--data`` is given: ``$NODEPROBE_DATA``, else the
repository's ``../shared/data`` when it exists, else the user download folder
(``$XDG_CACHE_HOME/nodeprobe`` or ``~/.cache/nodeprobe``).

Kept apart from :mod:`nodeprobe.data` (whose package imports the loaders) so the CLI can name the
default data folder — an input no output may sit inside — at start-up, standard library only.

Example:
    >>> from nodeprobe.data_home import default_data_dir
    >>> default_data_dir().is_absolute()
    True
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["default_data_dir", "download_dir", "repo_shared_data"]


def download_dir() -> Path:
    """``$XDG_CACHE_HOME/nodeprobe`` or ``~/.cache/nodeprobe`` (not created here).

    Example:
        >>> download_dir().name
        'nodeprobe'
    """
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base).expanduser() / "nodeprobe"


def repo_shared_data() -> Path:
    """``<repository>/../shared/data`` (whether or not it exists)."""
    return (Path(__file__).resolve().parents[1] / ".." / "shared" / "data").resolve()


def default_data_dir() -> Path:
    """The data folder of a command without ``--data``: ``$NODEPROBE_DATA``, else
    :func:`repo_shared_data` if it is a folder, else :func:`download_dir` (none is created here).

    Example:
        >>> import os; os.environ["NODEPROBE_DATA"] = "/data/np"
        >>> default_data_dir()
        PosixPath('/data/np')
        >>> del os.environ["NODEPROBE_DATA"]
    """
    env = os.environ.get("NODEPROBE_DATA")
    if env:
        return Path(env).expanduser()
    shared = repo_shared_data()
    return shared if shared.is_dir() else download_dir()
