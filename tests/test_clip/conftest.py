"""Fixtures of the CLIP access-layer tests (tiny deterministic models, isolated cache)."""
from __future__ import annotations

from pathlib import Path
from typing import Dict, Iterator

import open_clip
import pytest
import torch

from wsss_mmseg.clip import clear_clip_cache, save_openai_format, tiny_clip

TINY_NAME = 'wsss-tiny-vit-test'


@pytest.fixture(autouse=True)
def _isolated_clip_cache() -> Iterator[None]:
    clear_clip_cache()
    yield
    clear_clip_cache()


@pytest.fixture
def tiny_vit() -> torch.nn.Module:
    """Tiny ViT CLIP (width 64, 2 layers, patch 16, 64 px), already fp16-rounded."""
    return tiny_clip(fp16_round=True)


@pytest.fixture
def tiny_vit_file(tmp_path: Path, tiny_vit: torch.nn.Module) -> Path:
    """``tiny_vit`` saved in the OpenAI state-dict format."""
    return Path(save_openai_format(tiny_vit, tmp_path / 'tiny_vit.pt'))


def tiny_model_cfg() -> Dict:
    """open_clip config with the geometry of ``tiny_clip(text_width=64)``."""
    return {
        'embed_dim': 32,
        'vision_cfg': {'image_size': 64, 'layers': 2, 'width': 64, 'patch_size': 16},
        'text_cfg': {'context_length': 77, 'vocab_size': 49408, 'width': 64, 'heads': 1, 'layers': 1},
    }


@pytest.fixture
def tiny_model_name(monkeypatch: pytest.MonkeyPatch) -> str:
    """Register a tiny architecture in open_clip's config registry for one test."""
    monkeypatch.setitem(open_clip.factory._MODEL_CONFIGS, TINY_NAME, tiny_model_cfg())
    return TINY_NAME
