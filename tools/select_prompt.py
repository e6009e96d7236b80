"""Rank candidate prompt templates by sharpness over a dataset (CLIP-ES prompt selection).

Usage::

    python tools/select_prompt.py configs/clip_es_voc.py --templates my_templates.txt \
        [--max-images 500] [--out work_dirs/prompt_rank.json] [--cfg-options ...]

``--templates`` is a text file with one template per line containing ``{}`` (``#`` starts
a comment), or the name of a template set (``openai80``, ``maskclip85``, ...). The images
and their image-level labels come from the config's ``pseudo_dataset``; the CLIP model,
class table and synonyms from its ``generator``. Each image is encoded once (plain CLIP
``encode_image`` at the model's native resolution, centre-cropped as CLIP was trained);
each template gives class embeddings; the sharpness of the per-image class-probability
vectors ranks the templates (see :mod:`wsss_mmseg.text.prompt_selection`). Prints a table,
writes JSON.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from typing import List, Optional


def read_templates(spec: str) -> List[str]:
    """Templates from a file (one per line) or a template-set name."""
    from wsss_mmseg.text import vocab
    if os.path.isfile(spec):
        lines = [ln.strip() for ln in open(spec, encoding='utf-8')]
        out = [ln for ln in lines if ln and not ln.startswith('#')]
        for i, t in enumerate(out):
            if t.count('{}') != 1:
                raise ValueError(f'{spec}: template {i + 1} {t!r} must contain exactly one "{{}}"')
        if not out:
            raise ValueError(f'{spec}: no templates')
        return out
    try:
        return vocab.templates(spec)
    except KeyError as err:
        raise FileNotFoundError(f'--templates {spec!r} is neither a file nor a template set '
                                f'({", ".join(vocab.list_tables(kind="templates"))})') from err


def main(argv: Optional[List[str]] = None) -> int:
    from mmengine.config import Config, DictAction
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('config')
    p.add_argument('--templates', required=True, help='file with one template per line, or a set name')
    p.add_argument('--max-images', type=int, default=None)
    p.add_argument('--out', default=None, help='JSON output (default: <work_dir>/prompt_rank.json)')
    p.add_argument('--cfg-options', nargs='+', action=DictAction)
    args = p.parse_args(argv)

    import torch
    import torch.nn.functional as F
    from mmengine.utils import ProgressBar
    from mmseg.registry import DATASETS

    import wsss_mmseg  # noqa: F401
    from wsss_mmseg.cam.clip_es import CLIP_MEAN, CLIP_STD
    from wsss_mmseg.clip import CLIPViT, build_clip, get_tokenizer
    from wsss_mmseg.models.generators import resolve_device
    from wsss_mmseg.text.encoder import class_embeddings
    from wsss_mmseg.text.prompt_selection import rank_templates
    from wsss_mmseg.utils.images import load_rgb

    cfg = Config.fromfile(args.config)
    if args.cfg_options:
        cfg.merge_from_dict(args.cfg_options)
    templates = read_templates(args.templates)
    gen = cfg.generator
    clip_cfg = dict(gen.get('clip') or dict(model_name='ViT-B-16', pretrained='openai'))
    device = resolve_device(gen.get('device', 'auto'))
    model = build_clip(device=device, config_key='generator.clip.pretrained', **clip_cfg)
    tokenizer = get_tokenizer(clip_cfg.get('model_name') or 'ViT-B-16')
    vit = CLIPViT(model.visual)
    size = vit.native_grid[0] * vit.patch_size
    dataset = DATASETS.build(cfg.pseudo_dataset)
    records = list(dataset)[:args.max_images] if args.max_images else list(dataset)
    if not records:
        raise SystemExit('the dataset has no images')

    mean = torch.tensor(CLIP_MEAN).view(3, 1, 1)
    std = torch.tensor(CLIP_STD).view(3, 1, 1)
    embs, labels, skipped = [], [], []
    bar = ProgressBar(len(records))
    with torch.no_grad():
        for rec in records:
            if not rec['label_ids']:
                skipped.append((rec['img_path'], 'no image-level labels'))
                bar.update()
                continue
            try:
                img = load_rgb(rec['img_path'])
            except (OSError, ValueError) as err:
                skipped.append((rec['img_path'], str(err)))
                bar.update()
                continue
            x = torch.from_numpy(img).permute(2, 0, 1).float().div(255)
            h, w = x.shape[1:]
            scale = size / min(h, w)  # CLIP's resize (short side) + centre crop
            x = F.interpolate(x[None], size=(max(size, round(h * scale)), max(size, round(w * scale))),
                              mode='bicubic', align_corners=False, antialias=True)[0]
            top, left = (x.shape[1] - size) // 2, (x.shape[2] - size) // 2
            x = ((x[:, top:top + size, left:left + size] - mean) / std)[None].to(device)
            embs.append(vit.encode_image(x).float().cpu())
            labels.append(list(rec['label_ids']))
            bar.update()
    print()
    if not embs:
        raise SystemExit('no readable image with labels')
    image_emb = torch.cat(embs)
    per_template = {}
    for t in templates:
        fg, _ = class_embeddings(model, tokenizer, table=gen.get('class_table', 'voc20'),
                                 synonyms=gen.get('synonyms'), templates=[t], background=None,
                                 device=device)
        per_template[t] = fg.cpu()
    rows = rank_templates(image_emb, per_template, labels=labels,
                          logit_scale=float(model.logit_scale.exp()))
    width = max(len(r['template']) for r in rows)
    print(f'{"rank":>4s}  {"template":{width}s}  {"sharpness":>9s}  {"label score":>11s}')
    for i, r in enumerate(rows, 1):
        print(f'{i:4d}  {r["template"]:{width}s}  {r["sharpness"]:9.4f}  {r["label_score"]:11.4f}')
    out = args.out or os.path.join(cfg.get('work_dir', 'work_dirs'), 'prompt_rank.json')
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    with open(out, 'w') as f:
        json.dump(dict(images=len(labels), skipped=skipped, ranking=rows), f, indent=1)
    if skipped:
        print(f'{len(skipped)} image(s) skipped:', *[f'  {p}: {why}' for p, why in skipped], sep='\n')
    print(f'ranking written to {out}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
