"""Getting a pretrained tag's weights (``pretrained='openai'``), failing fast and clearly offline.

open_clip's download retries the Hugging Face hub for about a minute and prints several tracebacks
before giving up when there is no network. Here the hub's host (or the HTTPS proxy) is probed first
with one short TCP connection; when it cannot be reached (or ``HF_HUB_OFFLINE`` is set) a copy in the
download cache is used, and without one a single :class:`PretrainedDownloadError` says which config
key takes a local file instead (``generator.clip.pretrained=/path/ViT-B-16.pt``).

Pure open_clip / huggingface_hub / standard library (no mmseg).
"""
from __future__ import annotations

import os
import socket
import urllib.request
from typing import Any, Dict, List, Mapping, Optional, Tuple
from urllib.parse import urlparse

from open_clip import pretrained as _oc_pretrained

__all__ = ['PretrainedDownloadError', 'PROBE_TIMEOUT_S', 'local_weights_hint', 'hub_offline_reason',
           'cached_weights', 'download_weights']

#: Seconds one TCP connection probe of the download host may take.
PROBE_TIMEOUT_S = 2.5
_TRUE = ('1', 'true', 'yes', 'on')


class PretrainedDownloadError(RuntimeError):
    """Pretrained weights named by a tag could not be downloaded (e.g. no network)."""


def _uses_hf_hub(cfg: Mapping[str, Any]) -> bool:
    """Whether open_clip's ``download_pretrained`` takes the Hugging Face hub for this tag."""
    return bool(cfg.get('hf_hub')) and _oc_pretrained.has_hf_hub()


def _download_url(cfg: Mapping[str, Any]) -> str:
    if _uses_hf_hub(cfg):
        from huggingface_hub import constants
        return str(constants.ENDPOINT)
    return str(cfg.get('url', ''))


def _probe_address(url: str) -> Optional[Tuple[str, int]]:
    """``(host, port)`` a download of ``url`` connects to first: the HTTPS/HTTP proxy, else the host."""
    parsed = urlparse(url)
    if not parsed.hostname:
        return None
    proxy = urllib.request.getproxies().get(parsed.scheme or 'https')
    if proxy and not urllib.request.proxy_bypass(parsed.hostname):
        p = urlparse(proxy if '://' in proxy else f'http://{proxy}')
        if p.hostname:
            return p.hostname, p.port or (443 if p.scheme == 'https' else 80)
    return parsed.hostname, parsed.port or (443 if parsed.scheme == 'https' else 80)


def hub_offline_reason(cfg: Mapping[str, Any], *, timeout: float = PROBE_TIMEOUT_S) -> Optional[str]:
    """Why the weights of a pretrained config cannot be downloaded now, or None when they may be.

    Args:
        cfg: ``open_clip.get_pretrained_cfg(model_name, tag)``.
        timeout: Seconds of the connection probe.

    Returns:
        ``'HF_HUB_OFFLINE=1 is set'``, ``'cannot connect to huggingface.co:443 (...)'`` or None.
    """
    for var in ('HF_HUB_OFFLINE', 'TRANSFORMERS_OFFLINE'):
        if os.environ.get(var, '').strip().lower() in _TRUE:
            return f'{var}={os.environ[var]} is set'
    address = _probe_address(_download_url(cfg))
    if address is None:
        return None
    try:
        with socket.create_connection(address, timeout=timeout):
            return None
    except OSError as exc:  # DNS failure, refused, unreachable, timeout
        return f'cannot connect to {address[0]}:{address[1]} ({type(exc).__name__}: {exc})'


def cached_weights(cfg: Mapping[str, Any], cache_dir: Optional[str] = None) -> Optional[str]:
    """A copy of the tag's weights already in open_clip's download cache, without any network.

    Args:
        cfg: ``open_clip.get_pretrained_cfg(model_name, tag)``.
        cache_dir: The ``cache_dir`` given to the download (None: the libraries' defaults).

    Returns:
        The cached file, or None.
    """
    if cfg.get('file'):
        return cfg['file'] if os.path.isfile(cfg['file']) else None
    if _uses_hf_hub(cfg):
        from huggingface_hub import try_to_load_from_cache
        model_id, filename = os.path.split(str(cfg['hf_hub']))
        filename = filename or _oc_pretrained.HF_WEIGHTS_NAME
        names: List[str] = list(_oc_pretrained._get_safe_alternatives(filename)) + [filename]
        for name in names:
            found = try_to_load_from_cache(model_id, name, cache_dir=cache_dir)
            if isinstance(found, str) and os.path.isfile(found):
                return found
        return None
    url = cfg.get('url')
    if url:
        path = os.path.join(cache_dir or os.path.expanduser('~/.cache/clip'), os.path.basename(url))
        return path if os.path.isfile(path) else None
    return None


def local_weights_hint(name: str, config_key: Optional[str]) -> str:
    """The sentence saying where a local weights file goes (config key, else config sections + Python).

    Args:
        name: open_clip architecture (for the example file name).
        config_key: Dotted config key of the ``pretrained`` entry, e.g.
            ``'generator.clip.pretrained'``; None when the caller does not know it.

    Returns:
        The hint.
    """
    example = f'/path/{name}.pt'
    what = f"OpenAI's released {name}.pt or an open_clip checkpoint of '{name}'"
    if config_key:
        return (f'Give a local weights file ({what}): {config_key}={example}, '
                f'e.g. --cfg-options {config_key}={example}')
    return (f'Give a local weights file ({what}) as <section>.clip.pretrained={example} in the '
            f'config or with --cfg-options (e.g. generator.clip.pretrained={example}, '
            f'model.backbone.clip.pretrained={example}); from Python: '
            f"build_clip('{name}', pretrained='{example}').")


def download_weights(name: str, tag: str, cfg: Dict[str, Any], *, cache_dir: Optional[str] = None,
                     config_key: Optional[str] = None) -> str:
    """The weights file of a pretrained tag: cached, or downloaded when the hub is reachable.

    Args:
        name: open_clip architecture.
        tag: Pretrained tag (``'openai'``).
        cfg: ``open_clip.get_pretrained_cfg(name, tag)``.
        cache_dir: Download cache.
        config_key: Config key named in the error (see :func:`local_weights_hint`).

    Returns:
        Path of the weights file.

    Raises:
        PretrainedDownloadError: Offline without a cached copy, or the download failed; one error
            (no chained tracebacks) naming the reason and where a local file goes.
    """
    hint = local_weights_hint(name, config_key)
    reason = hub_offline_reason(cfg)
    if reason is not None:
        cached = cached_weights(cfg, cache_dir)
        if cached is not None:
            return cached
        raise PretrainedDownloadError(
            f"cannot get the '{tag}' weights of CLIP '{name}': no network ({reason}) and no copy in the "
            f'download cache. {hint}')
    try:
        path = _oc_pretrained.download_pretrained(cfg, cache_dir=cache_dir)
    except Exception as exc:  # noqa: BLE001 - every download failure gets the same advice
        raise PretrainedDownloadError(
            f"could not download the '{tag}' weights of CLIP '{name}' ({type(exc).__name__}: {exc}). "
            f'{hint}') from None
    if not path or not os.path.isfile(path):
        raise PretrainedDownloadError(f"no weights file was obtained for '{name}' / '{tag}'. {hint}")
    return path
