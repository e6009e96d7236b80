"""Pretrained tags offline: one fast error naming the config key (issue #17 item 5).

Before, ``pretrained='openai'`` without network spent ~55 s in open_clip's hub retries, printed
three tracebacks and ended with a message naming the Python call ``build_clip(..., pretrained=...)``
instead of the key the user types (``generator.clip.pretrained=/path/ViT-B-16.pt``).
"""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import open_clip
import pytest
import torch

from wsss_mmseg.clip import PretrainedDownloadError, build_clip, save_openai_format, tiny_clip
from wsss_mmseg.clip import download as dl

REPO = Path(__file__).resolve().parents[2]


def _no_proxy(monkeypatch):
    for var in ('http_proxy', 'https_proxy', 'HTTP_PROXY', 'HTTPS_PROXY', 'all_proxy', 'ALL_PROXY'):
        monkeypatch.delenv(var, raising=False)
    for var in ('HF_HUB_OFFLINE', 'TRANSFORMERS_OFFLINE'):
        monkeypatch.delenv(var, raising=False)


def test_sockets_disabled_one_fast_error_naming_the_config_key(tmp_path):
    """A child process whose sockets refuse to connect, with an empty download cache."""
    code = (
        'import json, socket, sys, time, traceback\n'
        'def _deny(*a, **k):\n'
        '    raise OSError("network disabled in test")\n'
        'socket.socket.connect = _deny\n'
        'socket.create_connection = _deny\n'
        'from wsss_mmseg.clip import PretrainedDownloadError, build_clip\n'
        't = time.monotonic()\n'
        'try:\n'
        '    build_clip("ViT-B-16", "openai", config_key="generator.clip.pretrained")\n'
        '    out = dict(ok=True)\n'
        'except Exception as exc:\n'
        '    out = dict(ok=False, type=type(exc).__name__, msg=str(exc),\n'
        '               chained=exc.__cause__ is not None or (exc.__context__ is not None\n'
        '                                                     and not exc.__suppress_context__),\n'
        '               tb=traceback.format_exc().count("Traceback"))\n'
        'out["seconds"] = time.monotonic() - t\n'
        'print("RESULT " + json.dumps(out))\n')
    env = dict(os.environ, PYTHONPATH=str(REPO), HOME=str(tmp_path), XDG_CACHE_HOME=str(tmp_path / 'cache'),
               HF_HOME=str(tmp_path / 'hf'))
    for var in ('HF_HUB_OFFLINE', 'TRANSFORMERS_OFFLINE', 'HF_HUB_CACHE', 'HUGGINGFACE_HUB_CACHE'):
        env.pop(var, None)
    res = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, timeout=300, env=env)
    lines = [ln for ln in res.stdout.splitlines() if ln.startswith('RESULT ')]
    assert lines, res.stdout[-2000:] + res.stderr[-3000:]
    out = json.loads(lines[-1][len('RESULT '):])
    assert out['ok'] is False
    assert out['type'] == 'PretrainedDownloadError'
    assert 'generator.clip.pretrained=/path/ViT-B-16.pt' in out['msg']
    assert 'no network' in out['msg'] and 'network disabled in test' in out['msg']
    assert 'build_clip(' not in out['msg']  # names the key the user types, not the Python API
    assert out['chained'] is False and out['tb'] == 1
    assert out['seconds'] < 10, out  # no hub retries
    assert 'Traceback' not in res.stderr  # nothing printed by retrying libraries


def test_hf_hub_offline_fails_without_calling_the_download(monkeypatch, tmp_path):
    _no_proxy(monkeypatch)
    monkeypatch.setenv('HF_HUB_OFFLINE', '1')
    calls = []
    monkeypatch.setattr(open_clip.pretrained, 'download_pretrained', lambda *a, **k: calls.append(a))
    with pytest.raises(PretrainedDownloadError) as info:
        build_clip('ViT-B-16', 'openai', cache_dir=str(tmp_path / 'empty'),
                   config_key='model.teacher.clip.pretrained')
    msg = str(info.value)
    assert 'HF_HUB_OFFLINE=1 is set' in msg
    assert '--cfg-options model.teacher.clip.pretrained=/path/ViT-B-16.pt' in msg
    assert calls == []


def test_default_message_names_the_section_key(monkeypatch, tmp_path):
    _no_proxy(monkeypatch)
    monkeypatch.setenv('HF_HUB_OFFLINE', '1')
    with pytest.raises(PretrainedDownloadError) as info:
        build_clip('ViT-B-16', 'openai', cache_dir=str(tmp_path / 'empty'))
    msg = str(info.value)
    assert '<section>.clip.pretrained=/path/ViT-B-16.pt' in msg
    assert "build_clip('ViT-B-16', pretrained='/path/ViT-B-16.pt')" in msg


def test_missing_file_names_the_config_key(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"^generator\.clip\.pretrained: pretrained checkpoint file"):
        build_clip(None, str(tmp_path / 'nope.pt'), config_key='generator.clip.pretrained')


def _same(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return set(sa) == set(sb) and all(torch.equal(sa[k].float(), sb[k].float()) for k in sa)


def test_offline_uses_a_cached_url_download(monkeypatch, tmp_path, tiny_model_name):
    _no_proxy(monkeypatch)
    monkeypatch.setenv('HF_HUB_OFFLINE', '1')
    model = tiny_clip(text_width=64, fp16_round=True)
    save_openai_format(model, tmp_path / 'cache' / 'w.pt')
    tag_cfg = {'url': 'https://example.invalid/abc/w.pt', 'quick_gelu': True}
    monkeypatch.setattr(open_clip, 'get_pretrained_cfg',
                        lambda name, tag: tag_cfg if (name, tag) == (tiny_model_name, 'mytag') else {})
    monkeypatch.setattr(open_clip.pretrained, 'download_pretrained',
                        lambda *a, **k: pytest.fail('no download offline'))
    assert _same(model, build_clip(tiny_model_name, 'mytag', cache_dir=str(tmp_path / 'cache')))


def test_offline_uses_a_cached_hf_hub_download(monkeypatch, tmp_path, tiny_model_name):
    _no_proxy(monkeypatch)
    monkeypatch.setenv('HF_HUB_OFFLINE', '1')
    model = tiny_clip(text_width=64, fp16_round=True)
    repo = tmp_path / 'hf' / 'models--org--tiny'
    (repo / 'refs').mkdir(parents=True)
    (repo / 'refs' / 'main').write_text('0123abc')
    save_openai_format(model, repo / 'snapshots' / '0123abc' / 'open_clip_pytorch_model.bin')
    tag_cfg = {'hf_hub': 'org/tiny/', 'quick_gelu': True}
    monkeypatch.setattr(open_clip, 'get_pretrained_cfg',
                        lambda name, tag: tag_cfg if (name, tag) == (tiny_model_name, 'mytag') else {})
    monkeypatch.setattr(open_clip.pretrained, 'download_pretrained',
                        lambda *a, **k: pytest.fail('no download offline'))
    assert _same(model, build_clip(tiny_model_name, 'mytag', cache_dir=str(tmp_path / 'hf')))


def test_probe_reports_a_closed_port_and_accepts_an_open_one(monkeypatch):
    _no_proxy(monkeypatch)
    with socket.socket() as srv:
        srv.bind(('127.0.0.1', 0))
        srv.listen(1)
        port = srv.getsockname()[1]
        assert dl.hub_offline_reason({'url': f'http://127.0.0.1:{port}/w.pt'}) is None
    t = time.monotonic()
    reason = dl.hub_offline_reason({'url': f'http://127.0.0.1:{port}/w.pt'}, timeout=2.5)
    assert reason is not None and reason.startswith(f'cannot connect to 127.0.0.1:{port} (')
    assert time.monotonic() - t < 3


def test_probe_goes_to_the_https_proxy(monkeypatch):
    _no_proxy(monkeypatch)
    monkeypatch.setenv('https_proxy', 'http://proxy.invalid:3128')
    monkeypatch.setenv('no_proxy', '')
    seen = []

    def fake_connect(address, timeout):
        seen.append((address, timeout))
        raise OSError('refused')

    monkeypatch.setattr(dl.socket, 'create_connection', fake_connect)
    reason = dl.hub_offline_reason({'url': 'https://openaipublic.example/x/ViT-B-16.pt'})
    assert seen == [(('proxy.invalid', 3128), dl.PROBE_TIMEOUT_S)]
    assert reason == 'cannot connect to proxy.invalid:3128 (OSError: refused)'


def test_image_encoder_error_names_model_backbone_key(monkeypatch, tmp_path):
    _no_proxy(monkeypatch)
    monkeypatch.setenv('HF_HUB_OFFLINE', '1')
    monkeypatch.setattr(dl, 'cached_weights', lambda cfg, cache_dir=None: None)  # whatever this machine cached
    from wsss_mmseg.models.clip_encoders import FrozenCLIPImageEncoder
    with pytest.raises(PretrainedDownloadError, match=r'model\.backbone\.clip\.pretrained=/path/ViT-B-16\.pt'):
        FrozenCLIPImageEncoder(clip=dict(model_name='ViT-B-16', pretrained='openai'))
