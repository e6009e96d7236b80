"""Adversarial erasing (AE-PSL): several rounds of classifier training with mined regions erased.

Usage::

    python tools/adversarial_erasing.py configs/classic/ae_r50_voc.py \\
        [--work-dir DIR] [--rounds 3] [--threshold 0.5] [--cfg-options k=v ...]

Round ``r`` trains a fresh classifier (an ordinary mmengine ``Runner`` on the
config) on the training images with the regions mined in rounds ``< r``
erased (mean pixel, ``EraseRegions`` in the train pipeline); after training,
``AdversarialErasingHook`` mines ``CAM > threshold`` of every labelled class
on the erased images and writes the union with the earlier regions to
``<work-dir>/round_r/erase/<id>.png``. The checkpoints of all rounds are listed
in ``<work-dir>/rounds.json`` (paths relative to the work dir); the config's
``AdversarialErasingCAMGenerator(rounds=<work_dir>/rounds.json)`` reads it, so
the pseudo labels from their merged CAMs are one command::

    python tools/generate_pseudo.py configs/classic/ae_r50_voc.py

(with another ``--work-dir`` here, add ``--cfg-options
generator.rounds=<work-dir>/rounds.json``; the tool prints the command). Each
round's config dump is ``<work-dir>/round_r/<config name>.py``.

The config's ``adversarial_erasing`` dict gives the defaults
(``rounds``, ``threshold``, ``mining`` = extra hook arguments).
"""
from __future__ import annotations

import argparse
import os.path as osp
import sys
from typing import List, Optional


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    """Command-line arguments."""
    from mmengine.config import DictAction
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0],
                                     epilog=__doc__.split('\n', 1)[1],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('config', help='classifier training config with EraseRegions')
    parser.add_argument('--work-dir', help='output folder (default work_dirs/<config name>)')
    parser.add_argument('--rounds', type=int, help='number of rounds (config default)')
    parser.add_argument('--threshold', type=float, help='CAM threshold of mined regions')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override config entries')
    return parser.parse_args(argv)


def main(argv: Optional[List[str]] = None) -> int:
    """Run all rounds; returns 0."""
    args = parse_args(argv)
    from mmengine.config import Config

    import wsss_mmseg  # noqa: F401
    from wsss_mmseg.hooks.adversarial_erasing import run_adversarial_erasing
    cfg = Config.fromfile(args.config)
    if args.cfg_options:
        cfg.merge_from_dict(args.cfg_options)
    ae = dict(cfg.get('adversarial_erasing') or {})
    unknown = sorted(set(ae) - {'rounds', 'threshold', 'mining'})
    if unknown:
        raise KeyError(f'unknown adversarial_erasing option(s) {unknown}; known: rounds, '
                       'threshold, mining')
    work_dir = args.work_dir or cfg.get('work_dir') or osp.join(
        'work_dirs', osp.splitext(osp.basename(args.config))[0])
    result = run_adversarial_erasing(
        cfg, work_dir=work_dir,
        rounds=args.rounds if args.rounds is not None else ae.get('rounds', 3),
        threshold=args.threshold if args.threshold is not None else ae.get('threshold', 0.5),
        mining=ae.get('mining'))
    rounds_file = osp.join(work_dir, 'rounds.json')
    print('checkpoints of the rounds:\n  ' + '\n  '.join(result['checkpoints']))
    print(f'listed in {rounds_file}; pseudo labels from their merged CAMs:')
    gen = cfg.get('generator') or {}
    same = gen.get('rounds') and osp.abspath(str(gen['rounds'])) == osp.abspath(rounds_file)
    print(f'  python tools/generate_pseudo.py {args.config}'
          + ('' if same else f' --cfg-options generator.rounds={rounds_file}'))
    return 0


if __name__ == '__main__':
    sys.exit(main())
