"""Generate CLIP pseudo labels for a whole dataset (the wsss_mmseg pseudo-label job).

Usage::

    python tools/generate_pseudo.py CONFIG [--work-dir DIR] [--save-cams] [--no-resume]
        [--cfg-options k=v ...] [--launcher none|pytorch|slurm]

    # 2 processes on one machine (gloo on CPU, nccl on GPUs):
    python -m torch.distributed.run --nproc_per_node=2 tools/generate_pseudo.py CONFIG \\
        --launcher pytorch

The config holds ``pseudo_dataset`` (where images and image-level labels come
from), ``generator`` (CAMs), ``mask_maker`` (CAMs -> mask + confidence) and an
optional ``pseudo_job`` dict (see ``wsss_mmseg.pseudo.job``).

Output (``--work-dir``, default ``<cfg.work_dir>/pseudo`` or
``work_dirs/<config name>/pseudo``)::

    masks/<id>.png        palette PNG: 0 background, c+1 class c, 255 ignore
    confidence/<id>.png   16-bit PNG, round(confidence * 65535)
    cams/<id>.npy         with --save-cams: dict(keys, cam, cam_refined, attn_highres)
    summary.json, failures.txt, eval.json / eval.md / eval_iou.png (with GT masks)

Rerunning the same command resumes: images whose outputs were made with the same
settings (and are intact) are skipped; a work dir made with other settings is refused,
``--no-resume`` moves its outputs to ``superseded/`` and recomputes everything.

Exit statuses (for schedulers):
  0    all images done
  1    the job completed but some images (or their evaluation) failed: listed, and kept
       in failures.txt / summary.json; rerunning retries only those
  2    stopped: an output could not be written (disk full, ...) or another job holds
       the work dir's lock; rerun to resume
  3    bad config, option or arguments, or a work dir holding other settings (before
       any image was processed)
  130  interrupted (Ctrl-C / SIGINT); rerun to resume

Image-level label sources (``pseudo_dataset``):

* ``VOCImageLabels(data_root, split, img_dir, labels, gt_dir)``: labels from a
  JSON ``{"labels": {"2007_000032": [0, 14]}}`` (or a plain ``{id: [...]}``),
  an IRN ``cls_labels.npy`` (id -> 20-dim multi-hot) or a text file with lines
  ``id idx idx ...``; with ``labels=None`` they are derived from the GT masks.
* ``COCOImageLabels(data_root, ann_file, img_dir, gt_dir)``: a COCO instances
  JSON (COCO-80 contiguous indices) or a labels file as above.
* ``FolderImageLabels(img_dir, labels, class_table | classes)``: class NAMES per
  image, either a JSON ``{"dog1.jpg": ["dog", "person"], "sub/cat2": "cat;sofa"}``
  (keys: file names relative to img_dir, or ids without extension) or a CSV
  with the header ``image,labels`` and names separated by ``;`` or ``|``::

      image,labels
      dog1.jpg,dog|person
      sub/cat2.png,cat;sofa

  Unknown class names stop the job with an error naming the file, the image
  and close matches. Indices are 0-based, background excluded. From the
  command line, replace the config's dataset entirely with ``_delete_``::

      --cfg-options pseudo_dataset._delete_=True pseudo_dataset.type=FolderImageLabels \\
          pseudo_dataset.img_dir=my/images pseudo_dataset.labels=my/labels.csv \\
          pseudo_dataset.class_table=voc20
"""
from __future__ import annotations

import argparse
import datetime
import os
import os.path as osp
import sys
from typing import List, Optional


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    """Command-line arguments (``mmseg tools/train.py`` conventions)."""
    from mmengine.config import DictAction
    parser = argparse.ArgumentParser(
        description=__doc__.split('\n')[0],
        epilog=__doc__.split('\n', 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('config', help='config file with pseudo_dataset, generator, mask_maker')
    parser.add_argument('--work-dir', help='output folder (default: <cfg.work_dir>/pseudo '
                        'or work_dirs/<config name>/pseudo)')
    parser.add_argument('--save-cams', action='store_true', default=None,
                        help='also save cams/<id>.npy (official attn_highres layout + cam, '
                        'cam_refined)')
    parser.add_argument('--no-resume', action='store_true',
                        help='recompute every image even if its outputs exist')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override config entries, e.g. pseudo_dataset.labels=x.json '
                        'generator.device=cuda')
    parser.add_argument('--report', action='store_true',
                        help='also write the HTML inspection report (<work-dir>/report/index.html)')
    parser.add_argument('--launcher', choices=['none', 'pytorch', 'slurm', 'mpi'],
                        default='none', help='job launcher')
    # torch.distributed.launch passes --local_rank (older) / --local-rank (newer)
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)
    args = parser.parse_args(argv)
    if 'LOCAL_RANK' not in os.environ:
        os.environ['LOCAL_RANK'] = str(args.local_rank)
    return args


def default_work_dir(cfg, config_path: str) -> str:
    """``<cfg.work_dir>/pseudo`` if the config sets ``work_dir``, else
    ``work_dirs/<config name>/pseudo``."""
    if cfg.get('work_dir'):
        return osp.join(cfg.work_dir, 'pseudo')
    return osp.join('work_dirs', osp.splitext(osp.basename(config_path))[0], 'pseudo')


def main(argv: Optional[List[str]] = None) -> int:
    """Run the job; returns the exit status (see the module docstring)."""
    args = parse_args(argv)
    print(f'generate_pseudo: loading {args.config}', file=sys.stderr, flush=True)
    import torch
    from mmengine.config import Config
    from mmengine.dist import get_dist_info, init_dist
    from mmengine.logging import MMLogger

    import wsss_mmseg  # noqa: F401  (registers components, applies compat fixes)
    from wsss_mmseg.pseudo.job import run_pseudo_job, summarize_failures
    from wsss_mmseg.pseudo.workdir import (EXIT_CONFIG, EXIT_FAILED_IMAGES, EXIT_INTERRUPTED, EXIT_OK,
                                           EXIT_WRITE, OutputWriteError, PseudoConfigError,
                                           WorkDirLockedError, check_writable)

    try:
        cfg = Config.fromfile(args.config)
        if args.cfg_options is not None:
            cfg.merge_from_dict(args.cfg_options)
        if args.report:
            cfg.merge_from_dict(dict(pseudo_job=dict(report=True)))
    except Exception as exc:  # noqa: BLE001 - a config that cannot be read
        print(f'error: cannot read the config {args.config}: {type(exc).__name__}: {exc}', file=sys.stderr)
        return EXIT_CONFIG
    work_dir = args.work_dir or default_work_dir(cfg, args.config)

    if args.launcher != 'none':
        backend = 'nccl' if torch.cuda.is_available() else 'gloo'
        init_dist(args.launcher, backend=backend)
    try:
        rank, _ = get_dist_info()

        try:
            check_writable(work_dir)  # a clear error naming the folder, before anything else
        except OSError as exc:
            print(f'error: {exc}', file=sys.stderr)
            return EXIT_WRITE
        logger = MMLogger.get_instance(
            f'wsss_pseudo_{datetime.datetime.now():%Y%m%d_%H%M%S_%f}',
            log_file=osp.join(work_dir, 'pseudo.log'), log_level='INFO',
            file_mode='a')  # append: a resumed (or a refused second) run keeps the log
        try:
            summary = run_pseudo_job(cfg, work_dir=work_dir, save_cams=args.save_cams,
                                     resume=not args.no_resume, logger=logger)
        except PseudoConfigError as exc:
            print(f'error: {exc}', file=sys.stderr)
            return EXIT_CONFIG
        except (WorkDirLockedError, OutputWriteError) as exc:
            print(f'error: {exc}', file=sys.stderr)
            return EXIT_WRITE
        except PermissionError as exc:
            print(f'error: {exc}', file=sys.stderr)
            return EXIT_WRITE
        except Exception as exc:  # noqa: BLE001
            section = getattr(exc, 'wsss_config_section', None)
            if section is None:
                raise
            print(f'error: {section}: {type(exc).__name__}: {exc}', file=sys.stderr)
            return EXIT_CONFIG
        except KeyboardInterrupt:
            print('interrupted: finished images are kept; rerun the same command to resume', file=sys.stderr)
            return EXIT_INTERRUPTED
        failures = summary.get('failures') or []
        eval_failures = summary.get('evaluation_failures') or []
        if failures or eval_failures:
            if rank == 0:
                if failures:
                    print(summarize_failures(failures), file=sys.stderr)
                if eval_failures:
                    print(f'{len(eval_failures)} evaluation failure(s) (GT masks): see eval.json', file=sys.stderr)
            return EXIT_FAILED_IMAGES
        return EXIT_OK
    finally:
        # ranks end their process group themselves: left to interpreter exit, gloo's threads
        # can abort the process ('terminate called without an active exception', exit -6)
        if args.launcher != 'none' and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()


if __name__ == '__main__':
    sys.exit(main())
