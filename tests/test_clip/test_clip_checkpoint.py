"""Safe checkpoint reading: pickles, TorchScript archives, safetensors, refusals."""
from __future__ import annotations

import os
import pickle
import warnings
import zipfile
from collections import OrderedDict
from pathlib import Path

import pytest
import torch
from torch import nn

from wsss_mmseg.clip import (CheckpointError, UnsafeCheckpointError, load_checkpoint_file, read_torchscript_tensors,
                             save_openai_format)
from wsss_mmseg.clip.checkpoint import is_torchscript_archive


class _Evil:
    """Pickles to a call of ``os.mkdir(marker)``: must never run by default."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return os.mkdir, (self.marker,)


class _Scriptable(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(3, 2)
        self.register_buffer('buf', torch.arange(2.0))
        self.register_buffer('hidden', torch.zeros(1), persistent=False)
        self.plain = torch.ones(3)  # tensor attribute, neither parameter nor buffer
        self.count = 5
        self.p = nn.Parameter(torch.full((2, 2), 0.5, dtype=torch.float16))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lin(x) + self.buf


def _jit_state(path: Path) -> dict:
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        return dict(torch.jit.load(str(path), map_location='cpu').state_dict())


def _script_save(module: nn.Module, path: Path) -> Path:
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        torch.jit.script(module).save(str(path))
    return path


def test_plain_state_dict(tmp_path: Path) -> None:
    state = OrderedDict(a=torch.randn(2, 3, generator=torch.Generator().manual_seed(0)),
                        b=torch.tensor(7, dtype=torch.int64))
    torch.save(state, tmp_path / 'sd.pt')
    ckpt = load_checkpoint_file(tmp_path / 'sd.pt')
    assert ckpt.file_format == 'pickle' and not ckpt.used_unsafe_pickle
    assert list(ckpt.state_dict) == ['a', 'b']
    assert torch.equal(ckpt.state_dict['a'], state['a']) and ckpt.state_dict['b'].item() == 7


def test_training_checkpoint_is_unwrapped(tmp_path: Path) -> None:
    weights = {'module.x.weight': torch.ones(2), 'module.y': torch.zeros(1)}
    torch.save({'epoch': 3, 'name': 'run', 'state_dict': weights}, tmp_path / 'ckpt.pt')
    state = load_checkpoint_file(tmp_path / 'ckpt.pt').state_dict
    assert sorted(state) == ['x.weight', 'y']


def test_non_state_dict_content_is_rejected(tmp_path: Path) -> None:
    torch.save([1, 2, 3], tmp_path / 'list.pt')
    with pytest.raises(CheckpointError, match='list.pt'):
        load_checkpoint_file(tmp_path / 'list.pt')
    torch.save({'w': torch.ones(1), 'meta': 'text'}, tmp_path / 'mixed.pt')
    with pytest.raises(CheckpointError, match=r"\['meta'\]"):
        load_checkpoint_file(tmp_path / 'mixed.pt')


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match='nope.pt'):
        load_checkpoint_file(tmp_path / 'nope.pt')


def test_malicious_pickle_is_refused_and_not_executed(tmp_path: Path) -> None:
    marker = tmp_path / 'pwned'
    torch.save({'state_dict': {'w': torch.ones(1)}, 'payload': _Evil(marker)}, tmp_path / 'evil.pt')
    with pytest.raises(UnsafeCheckpointError, match='allow_unsafe_pickle=True') as info:
        load_checkpoint_file(tmp_path / 'evil.pt')
    assert 'evil.pt' in str(info.value)
    assert not marker.exists()
    # The explicit opt-in really unpickles (and therefore runs the payload).
    ckpt = load_checkpoint_file(tmp_path / 'evil.pt', allow_unsafe_pickle=True)
    assert ckpt.used_unsafe_pickle and marker.exists()
    assert list(ckpt.state_dict) == ['w']


def test_torchscript_reader_matches_jit_load(tmp_path: Path) -> None:
    path = _script_save(_Scriptable(), tmp_path / 'm.pt')
    assert is_torchscript_archive(path)
    ours, ref = read_torchscript_tensors(path), _jit_state(path)
    assert sorted(ours) == sorted(ref) == ['buf', 'hidden', 'lin.bias', 'lin.weight', 'p']
    for key, value in ref.items():
        assert ours[key].dtype == value.dtype and torch.equal(ours[key], value)


def test_torchscript_clip_archive_matches_jit_load(tmp_path: Path, tiny_vit: nn.Module) -> None:
    path = Path(save_openai_format(tiny_vit, tmp_path / 'clip_ts.pt', torchscript=True))
    ours, ref = read_torchscript_tensors(path), _jit_state(path)
    assert sorted(ours) == sorted(ref)
    assert all(ours[k].dtype == ref[k].dtype and torch.equal(ours[k], ref[k]) for k in ref)
    ckpt = load_checkpoint_file(path)
    assert ckpt.file_format == 'torchscript' and not ckpt.used_unsafe_pickle


def test_malicious_torchscript_archive_is_refused(tmp_path: Path) -> None:
    marker = tmp_path / 'pwned_ts'
    path = tmp_path / 'evil_ts.pt'
    with zipfile.ZipFile(path, 'w') as archive:
        archive.writestr('evil_ts/data.pkl', pickle.dumps(_Evil(marker), protocol=2))
        archive.writestr('evil_ts/constants.pkl', pickle.dumps((), protocol=2))
        archive.writestr('evil_ts/version', '3\n')
    assert is_torchscript_archive(path)
    with pytest.raises(UnsafeCheckpointError, match='evil_ts.pt'):
        load_checkpoint_file(path)
    assert not marker.exists()


def test_safetensors(tmp_path: Path) -> None:
    st = pytest.importorskip('safetensors.torch')
    state = {'a': torch.arange(4, dtype=torch.float16), 'b': torch.ones(2, 2)}
    st.save_file(state, str(tmp_path / 'w.safetensors'))
    ckpt = load_checkpoint_file(tmp_path / 'w.safetensors')
    assert ckpt.file_format == 'safetensors'
    assert all(torch.equal(ckpt.state_dict[k], v) and ckpt.state_dict[k].dtype == v.dtype for k, v in state.items())
