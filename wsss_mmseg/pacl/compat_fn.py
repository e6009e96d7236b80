"""PACL compatibility function (spec maskclip_pacl.md §3.2, §3.7): pure tensor math.

Notation: ``P`` patch embeddings ``(B, T, D)`` (output of the vision embedder e_v),
``t`` text embeddings ``(K, D)`` (K classes, or the B captions of a batch).

* ``s = cos(P_i, t)``                                   :func:`patch_text_similarity` ``(B, K, T)``
* ``a = softmax_i(s / tau_a)`` over the T patches       :func:`patch_attention`
* ``v_hat = sum_i a_i P_i``                              :func:`pooled_embedding` ``(B, K, D)``
* ``phi_hat = cos(v_hat, t)``                            :func:`compatibility` ``(B, K)``

:func:`compatibility` evaluates phi_hat for **every** image-text pair (each pair with its own
text-conditioned pooling, spec §3.6 pitfall 1) without a Python loop over pairs, in chunks
of texts so that at most ``B * chunk * (T + D)`` values are alive at once.

Importable with torch only.
"""
from __future__ import annotations

from typing import Optional, Tuple, Union

import torch
import torch.nn.functional as F

__all__ = ['patch_text_similarity', 'patch_attention', 'pooled_embedding', 'compatibility',
           'check_embeddings']

_EPS = 1e-12


def check_embeddings(patches: torch.Tensor, texts: torch.Tensor) -> None:
    """Validate shapes: ``patches (B, T, D)`` and ``texts (K, D)`` with the same D.

    Args:
        patches: Patch embeddings.
        texts: Text embeddings.

    Raises:
        ValueError: Wrong rank, empty patch set, or mismatched embedding dims.
    """
    if patches.ndim != 3:
        raise ValueError(f'patch embeddings must be (B, T, D), got shape {tuple(patches.shape)}')
    if texts.ndim != 2:
        raise ValueError(f'text embeddings must be (K, D), got shape {tuple(texts.shape)}')
    if patches.shape[1] == 0:
        raise ValueError('patch embeddings have no patches (T = 0)')
    if patches.shape[-1] != texts.shape[-1]:
        raise ValueError(f'embedding dims differ: patches have D={patches.shape[-1]}, '
                         f'texts have D={texts.shape[-1]} (the vision embedder must output '
                         "the text embedding width, CLIP's embed_dim)")


def patch_text_similarity(patches: torch.Tensor, texts: torch.Tensor) -> torch.Tensor:
    """Cosine similarity of every patch with every text, ``s(x, y)_i``.

    Args:
        patches: ``(B, T, D)`` patch embeddings (any norm).
        texts: ``(K, D)`` text embeddings (any norm).

    Returns:
        ``(B, K, T)`` cosines.
    """
    check_embeddings(patches, texts)
    p = F.normalize(patches, dim=-1, eps=_EPS)
    t = F.normalize(texts.to(patches.dtype), dim=-1, eps=_EPS)
    return torch.einsum('btd,kd->bkt', p, t)


def patch_attention(similarity: torch.Tensor, *, temperature: float = 1.0) -> torch.Tensor:
    """Softmax over the patch axis (last), ``a = softmax_i(s / tau_a)``.

    Args:
        similarity: ``(..., T)`` patch-text similarities.
        temperature: ``tau_a > 0``; 1.0 is the paper's formula (no temperature).

    Returns:
        Same shape, each row over T sums to one.
    """
    if not temperature > 0:
        raise ValueError(f'pool temperature must be > 0, got {temperature}')
    return torch.softmax(similarity / float(temperature), dim=-1)


def pooled_embedding(patches: torch.Tensor, attention: torch.Tensor) -> torch.Tensor:
    """Attention-weighted sum of the patch embeddings, ``v_hat = sum_i a_i P_i``.

    Args:
        patches: ``(B, T, D)``.
        attention: ``(B, K, T)``.

    Returns:
        ``(B, K, D)``.
    """
    return torch.einsum('bkt,btd->bkd', attention, patches)


def compatibility(patches: torch.Tensor, texts: torch.Tensor, *, temperature: float = 1.0,
                  chunk_size: Optional[int] = 256, return_similarity: bool = False
                  ) -> Union[torch.Tensor, Tuple[torch.Tensor, torch.Tensor]]:
    """PACL compatibility ``phi_hat(x_b, y_k)`` for all ``B x K`` image-text pairs.

    Each pair gets its own text-conditioned pooling. Texts are processed in chunks of
    ``chunk_size`` (``None``: all at once); results do not depend on the chunk size.

    Args:
        patches: ``(B, T, D)`` patch embeddings (not necessarily normalised; the pooled
            vector uses them as they are, only the similarities use unit vectors).
        texts: ``(K, D)`` text embeddings.
        temperature: Patch-softmax temperature ``tau_a``.
        chunk_size: Texts per chunk (memory bound), or None.
        return_similarity: Also return the ``(B, K, T)`` patch-text cosines.

    Returns:
        ``phi (B, K)`` in ``[-1, 1]``, or ``(phi, similarity)`` with ``return_similarity``.
    """
    check_embeddings(patches, texts)
    if chunk_size is not None and chunk_size < 1:
        raise ValueError(f'chunk_size must be >= 1 or None, got {chunk_size}')
    k = texts.shape[0]
    step = k if chunk_size is None or k == 0 else int(chunk_size)
    t_unit = F.normalize(texts.to(patches.dtype), dim=-1, eps=_EPS)
    p_unit = F.normalize(patches, dim=-1, eps=_EPS)
    phis, sims = [], []
    for start in range(0, k, max(step, 1)):
        t = t_unit[start:start + step]
        sim = torch.einsum('btd,kd->bkt', p_unit, t)
        attn = patch_attention(sim, temperature=temperature)
        pooled = pooled_embedding(patches, attn)                        # (B, k, D)
        phis.append((F.normalize(pooled, dim=-1, eps=_EPS) * t.unsqueeze(0)).sum(-1))
        if return_similarity:
            sims.append(sim)
    if k == 0:
        phi = patches.new_zeros((patches.shape[0], 0))
        sim_all = patches.new_zeros((patches.shape[0], 0, patches.shape[1]))
    else:
        phi = torch.cat(phis, dim=1)
        sim_all = torch.cat(sims, dim=1) if return_similarity else None
    return (phi, sim_all) if return_similarity else phi
