"""Shared pytest setup: the ``slow`` marker and the path of the shared sample data.

Real data lives outside the repository in ``../shared/data`` (its licences forbid
redistribution); tests that need it use the ``shared_data`` fixture, which skips with
the reason where the folder is absent (e.g. a user's clone).
"""
import os
import tempfile
from pathlib import Path

import pytest

# caches (weights hashes, text features) of the test run go to a private folder, not ~/.cache;
# child processes inherit it
os.environ.setdefault('WSSS_MMSEG_CACHE', tempfile.mkdtemp(prefix='wsss_mmseg_test_cache_'))

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = (REPO_ROOT / '..' / 'shared' / 'data').resolve()


def pytest_addoption(parser):
    parser.addoption('--runslow', action='store_true', default=False,
                     help='also run tests marked @pytest.mark.slow')


def pytest_configure(config):
    config.addinivalue_line('markers', 'slow: slow test, run only with --runslow')


def pytest_collection_modifyitems(config, items):
    if config.getoption('--runslow'):
        return
    skip_slow = pytest.mark.skip(reason='slow: run with --runslow (make test-all)')
    for item in items:
        if 'slow' in item.keywords:
            item.add_marker(skip_slow)


@pytest.fixture(scope='session')
def shared_data() -> Path:
    """``../shared/data`` relative to the repository root; skips where absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f'shared sample data not found at {SHARED_DATA} '
                    '(it is not redistributed with the project)')
    return SHARED_DATA


@pytest.fixture(scope='session')
def tiny_clip_path(tmp_path_factory) -> str:
    """A tiny random CLIP ViT (patch 16, width 64, 2 layers) saved in OpenAI format."""
    from wsss_mmseg.clip import save_openai_format, tiny_clip
    path = tmp_path_factory.mktemp('clip') / 'tiny_vit.pt'
    save_openai_format(tiny_clip(seed=0, fp16_round=True), str(path))
    return str(path)
