"""Patch-level alignment probes of a PACL model (spec maskclip_pacl.md §3.5, "Table 1").

For every image of a VOC-layout set with GT masks (default: the config's val dataset), the image is
resized to ``--size`` x ``--size``, every patch gets the majority GT label (``--min-purity``) and two
metrics are computed for two patch embeddings:

* ``raw_clip``  -- CLIP's own dense embedding (last block, ``ln_post`` + ``proj``);
* ``pacl_head`` -- the PACL head's e_v (untrained without ``--checkpoint``).

Metrics:

* ``patch_acc``     -- zero-shot patch classification: argmax over the C foreground class prompts of
  the patch-text cosine, accuracy over foreground patches;
* ``coherence_auc`` -- semantic coherence: ROC-AUC of the cosine similarity of patch pairs, same
  class (positives) vs different class (negatives), background included as a class.

Usage::

    python tools/patch_alignment.py configs/pacl_vitb16_voc.py [--checkpoint iter_2000.pth] \
        [--data-root data/VOCdevkit/VOC2012] [--max-images 200] [--out alignment.json]
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import numpy as np
import torch


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    """Command-line arguments (``--cfg-options`` is mmengine's ``DictAction``, as in mmseg's tools)."""
    from mmengine.config import DictAction
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('config', help='PACL config (EncoderDecoder + FrozenCLIPImageEncoder + PACLHead)')
    p.add_argument('--checkpoint', default=None, help='trained checkpoint (default: untrained head)')
    p.add_argument('--data-root', default=None, help='VOC-layout root (default: the val dataset\'s)')
    p.add_argument('--split', default=None, help='id list relative to the root (default: the val ann_file)')
    p.add_argument('--img-dir', default=None, help='image folder (default: the val img_path prefix)')
    p.add_argument('--gt-dir', default=None, help='GT mask folder (default: the val seg_map_path prefix)')
    p.add_argument('--img-suffix', default='.jpg')
    p.add_argument('--gt-suffix', default='.png')
    p.add_argument('--size', type=int, default=224, help='square network input size (multiple of the patch)')
    p.add_argument('--min-purity', type=float, default=0.5)
    p.add_argument('--max-images', type=int, default=None)
    p.add_argument('--max-patches', type=int, default=4000, help='patch subset for the pairwise AUC')
    p.add_argument('--seed', type=int, default=0)
    p.add_argument('--device', default='cpu')
    p.add_argument('--out', default=None, help='also write the metrics as JSON here')
    p.add_argument('--cfg-options', nargs='+', action=DictAction,
                   help='override config entries, e.g. model.backbone.clip.model_name=None '
                   'model.backbone.clip.pretrained=/path/ViT-B-16.pt (mmengine DictAction syntax: '
                   'None/True/False, [a,b] lists)')
    return p.parse_args(argv)


def _records(args: argparse.Namespace, cfg: Any) -> List[Dict[str, Path]]:
    ds = cfg.get('val_dataloader', {}).get('dataset', {}) if cfg is not None else {}
    prefix = ds.get('data_prefix', {}) or {}
    root = Path(args.data_root or ds.get('data_root') or '.')
    split = args.split or ds.get('ann_file')
    img_dir = args.img_dir or prefix.get('img_path', 'JPEGImages')
    gt_dir = args.gt_dir or prefix.get('seg_map_path', 'SegmentationClass')
    if not split:
        raise ValueError('no id list: give --split (or a val dataset ann_file in the config)')
    split_path = root / split
    if not split_path.is_file():
        raise FileNotFoundError(f'id list not found: {split_path}')
    ids = [ln.split()[0] for ln in split_path.read_text().splitlines() if ln.strip()]
    if args.max_images is not None:
        ids = ids[:args.max_images]
    out = []
    for i in ids:
        img, gt = root / img_dir / f'{i}{args.img_suffix}', root / gt_dir / f'{i}{args.gt_suffix}'
        for path in (img, gt):
            if not path.is_file():
                raise FileNotFoundError(f'{path} (listed in {split_path}) does not exist')
        out.append(dict(id=i, img=img, gt=gt))
    if not out:
        raise ValueError(f'{split_path} lists no images')
    return out


def _load(img_path: Path, gt_path: Path, size: int) -> tuple:
    from PIL import Image
    img = np.asarray(Image.open(img_path).convert('RGB').resize((size, size), Image.BILINEAR))
    gt = np.asarray(Image.open(gt_path).resize((size, size), Image.NEAREST)).astype(np.int64)
    return img, gt


@torch.no_grad()
def evaluate_alignment(model: torch.nn.Module, records: List[Dict[str, Path]], *, size: int = 224,
                       min_purity: float = 0.5, max_patches: Optional[int] = 4000, seed: int = 0,
                       device: str = 'cpu') -> Dict[str, Dict[str, float]]:
    """Both metrics for the raw CLIP embedding and the PACL head embedding.

    Args:
        model: Built segmentor with ``backbone`` (``FrozenCLIPImageEncoder``, ViT) and ``decode_head``
            (``PACLHead``).
        records: ``dict(img=path, gt=path)`` per image (VOC masks: 0 background, c+1 class c, 255 ignore).
        size: Square input size.
        min_purity: Patch purity threshold.
        max_patches: Patch subset bound of the coherence AUC.
        seed: Subset seed.
        device: Torch device.

    Returns:
        ``{'raw_clip': {...}, 'pacl_head': {...}}`` with ``patch_acc``, ``coherence_auc``,
        ``fg_patches``, ``patches``, ``images``.
    """
    from wsss_mmseg.pacl.alignment import coherence_auc, patch_labels_from_mask, patch_zero_shot_accuracy

    model = model.to(device).eval()
    backbone, head = model.backbone, model.decode_head
    if not getattr(backbone, 'is_vit', False):
        raise ValueError('patch_alignment needs a ViT FrozenCLIPImageEncoder backbone')
    pre = model.data_preprocessor
    mean, std = pre.mean.view(1, 3, 1, 1).float(), pre.std.view(1, 3, 1, 1).float()
    patch = backbone.stride
    if size % patch:
        raise ValueError(f'--size {size} is not a multiple of the patch size {patch}')
    grid = (size // patch, size // patch)
    embs: Dict[str, List[torch.Tensor]] = {'raw_clip': [], 'pacl_head': []}
    labels: List[torch.Tensor] = []
    for rec in records:
        img, gt = _load(rec['img'], rec['gt'], size)
        x = (torch.from_numpy(np.array(img)).permute(2, 0, 1)[None].float().to(device) - mean.to(device)) / std.to(device)
        feats = backbone.tower.forward_features(x)
        embs['raw_clip'].append(feats['dense'][0, 1:].float().cpu())
        head_emb, _ = head.embed_patches(backbone(x))
        embs['pacl_head'].append(head_emb[0].float().cpu())
        labels.append(patch_labels_from_mask(torch.from_numpy(gt), grid, min_purity=min_purity))
    lab = torch.cat(labels)
    n_fg = len(head.class_names)
    fg_lab = torch.where((lab >= 1) & (lab <= n_fg), lab - 1, torch.full_like(lab, -1))
    texts = head.class_embeddings.float().cpu()
    result: Dict[str, Dict[str, float]] = {}
    for name, chunks in embs.items():
        e = torch.cat(chunks)
        if e.shape[1] != texts.shape[1]:
            raise ValueError(f'{name}: patch embeddings have D={e.shape[1]}, class texts D={texts.shape[1]}')
        correct, total = patch_zero_shot_accuracy(e, fg_lab, texts)
        valid = lab[(lab >= 0) & (lab <= n_fg)]
        auc = coherence_auc(e, torch.where(lab <= n_fg, lab, torch.full_like(lab, -1)),
                            max_patches=max_patches, seed=seed) if valid.unique().numel() > 1 else float('nan')
        result[name] = dict(patch_acc=correct / total if total else float('nan'), coherence_auc=auc,
                            fg_patches=total, patches=int((lab >= 0).sum()), images=len(records))
    return result


def format_table(result: Dict[str, Dict[str, float]]) -> str:
    """Plain-text table of :func:`evaluate_alignment`'s result."""
    lines = [f"{'embedding':<12} {'patch_acc':>10} {'coherence_auc':>14} {'fg_patches':>11} {'patches':>8}"]
    for name, m in result.items():
        lines.append(f"{name:<12} {m['patch_acc']:>10.4f} {m['coherence_auc']:>14.4f} "
                     f"{m['fg_patches']:>11d} {m['patches']:>8d}")
    return '\n'.join(lines)


def main(argv: Optional[Sequence[str]] = None) -> Dict[str, Dict[str, float]]:
    """Run the probes and print the table."""
    args = parse_args(argv)
    from mmengine.config import Config
    from mmengine.registry import init_default_scope
    cfg = Config.fromfile(args.config)
    if args.cfg_options:
        cfg.merge_from_dict(args.cfg_options)
    init_default_scope(cfg.get('default_scope', 'mmseg'))
    import wsss_mmseg.models.pacl  # noqa: F401  (registers PACLHead)
    from mmseg.registry import MODELS
    model = MODELS.build(cfg.model)
    if args.checkpoint:
        from mmengine.runner import load_checkpoint
        load_checkpoint(model, args.checkpoint, map_location='cpu', strict=True)
    records = _records(args, cfg)
    result = evaluate_alignment(model, records, size=args.size, min_purity=args.min_purity,
                                max_patches=args.max_patches, seed=args.seed, device=args.device)
    print(f"patch alignment ({'checkpoint ' + args.checkpoint if args.checkpoint else 'untrained head'}, "
          f'{len(records)} images, {args.size}px)')
    print(format_table(result))
    if args.out:
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        Path(args.out).write_text(json.dumps(result, indent=2))
    return result


if __name__ == '__main__':
    main(sys.argv[1:])
