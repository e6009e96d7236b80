"""``PseudoLabelHook``: make (or reuse) the pseudo labels a training reads, before it starts.

One ``mim train mmsegmentation CONFIG`` runs the whole weakly supervised
pipeline: image-level labels -> CLIP pseudo masks -> segmenter. The training
config carries the generator sections of the pseudo-label job
(``pseudo_dataset``, ``generator``, ``mask_maker``, optional ``pseudo_job``;
usually inherited from ``configs/clip_es_voc.py`` through ``_base_``) and::

    custom_hooks = [dict(type='PseudoLabelHook')]   # mode='auto'

When it runs
    ``before_train`` (priority ``HIGH``). mmengine's ``Runner.train()`` builds
    the train loop -- and with it the dataloader and the dataset -- *before*
    any hook is called (``before_run`` comes after ``build_train_loop`` too),
    and ``runner.test()``/``val()`` call ``before_run`` but never
    ``before_train``, so ``before_train`` is the first point that exists only
    in training. The dataset is built by then but reads no mask until a batch
    is loaded, so it is enough that the files exist before the first batch.
    Two consequences:

    * mmengine <= 0.10.7's ``IterBasedTrainLoop`` calls ``iter(dataloader)``
      in its constructor, so with ``num_workers > 0`` workers are already
      prefetching (and failing on missing files) when the hook runs. After
      generating, the hook therefore restarts the train iterator (and rewinds
      an ``InfiniteSampler``'s index stream), so the first batch is read from
      the new files and a run that generated trains on exactly the batches of
      a run that reused (with ``num_workers=0`` or persistent workers, as in
      our configs). onedl-mmengine creates the iterator lazily: nothing to
      restart there.
    * ``PseudoLabelSegDataset(check_files=True)`` checks the files while the
      dataset is built, i.e. before the hook: keep it False (the default) when
      the hook may generate; the hook checks every training file itself.

Where the labels are (``out_dir``)
    Taken from the train dataset: the parent of its
    ``data_prefix['seg_map_path']`` (``<dir>/masks``), whose confidence folder
    must be ``<dir>/confidence`` -- the layout the job writes. Our configs set
    both from one variable, ``pseudo_label_dir``; to move the labels override
    ``train_dataloader.dataset.data_prefix.seg_map_path=<dir>/masks`` and the
    hook follows. An explicit ``out_dir`` must name the same folder. Only when
    the train dataset contains no ``PseudoLabelSegDataset`` (a custom class
    the hook cannot inspect) does it fall back to ``out_dir`` or
    ``<work_dir>/pseudo``, without the per-file check.

What it decides (rank 0 inspects, every rank follows the same decision)
    The folder is inspected with :mod:`wsss_mmseg.pseudo.workdir` -- the module that
    owns the work-dir rules of ``tools/generate_pseudo.py`` too: the same fingerprint
    (config sections, label-file and weights *content*) and the same per-image
    provenance records decide which images are done. ``mode='auto'`` (default):

    * fingerprint matches, every image done -> **reuse**;
    * fingerprint matches, some images missing (an interrupted or partly failed run)
      -> **resume**: only the missing images are made;
    * no outputs yet -> **generate**;
    * outputs made with other settings (another generator, e.g. classic CAM labels
      the README points the training at; or changed prompts/weights/labels), or
      outputs without a readable fingerprint -> **error**, naming both configurations:
      the hook never deletes or overwrites pseudo labels it did not make. Choose
      ``mode='reuse'`` to train on them as they are, or ``mode='regenerate'`` to
      replace them: the old set is then *moved* to ``<out_dir>/superseded/`` (never
      deleted) and every image is made again.

    ``mode='reuse'`` never generates, moves or deletes: it trains on what is there (a
    fingerprint mismatch is only a warning; the generator sections are optional).

Generation runs :func:`wsss_mmseg.pseudo.job.run_pseudo_job` -- the code path
of ``tools/generate_pseudo.py`` -- in every rank (each rank takes its shard),
followed by ``mmengine.dist.barrier()``. Rank 0 hands the job the plan its decision
was made with (:func:`wsss_mmseg.pseudo.job.plan_pseudo_job`: the label source and the
fingerprint), so they are built and hashed once. Rank 0 holds the work dir's lock
(``<out_dir>/.lock``, the same one the tool takes) from the inspection to the end
of the job: a second training or a running tool job in the same folder stops the
hook with an error instead of interleaving files. The torch thread count and the random states
(python, numpy, torch, CUDA) are restored afterwards, so generating does not
change the training that follows.

Failures
    If any image failed, training stops with a ``RuntimeError`` listing them
    (id, path, stage, reason); finished images are kept, so the next run only
    retries the failed ones. Afterwards every sample of the train dataset must
    have its mask and confidence file (a training list with ids that
    ``pseudo_dataset`` does not cover is caught here): otherwise a
    ``FileNotFoundError`` lists them. With ``allow_failures=True`` both become
    warnings and the samples without labels are removed from the training set
    (the train dataloader is rebuilt; needs the train dataset to be a
    ``PseudoLabelSegDataset`` itself).

The hook logs what it did (``runner.logger``): ``generated N pseudo label(s)``,
``reused N pseudo label(s)``, the reason, timings and the pseudo-label mIoU
when the job evaluated against GT masks.

The hook's parts: :mod:`wsss_mmseg.hooks.pseudo_label_decision` (the decision above, rank
0's planning and locking), :mod:`wsss_mmseg.hooks.pseudo_label_files` (the train dataset's
label folders and files) and :mod:`wsss_mmseg.hooks.training_state` (random states,
thread count and train-loop iterator kept as without the hook).
"""
from __future__ import annotations

import copy
import os
import os.path as osp
import time
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import torch
from mmengine.hooks import Hook
from mmseg.registry import HOOKS

from .pseudo_label_decision import MODES, decide_action, error_types, make_decision
from .pseudo_label_files import label_dirs_of, list_missing, missing_label_files, pseudo_datasets_of
from .training_state import preserved_process_state, replace_train_dataset, restart_train_iterator

__all__ = ['PseudoLabelHook', 'decide_action', 'pseudo_datasets_of', 'label_dirs_of',
           'missing_label_files', 'GENERATOR_SECTIONS', 'MODES']

PathLike = Union[str, os.PathLike]

#: Config sections the pseudo-label job reads (the last one is optional).
GENERATOR_SECTIONS = ('pseudo_dataset', 'generator', 'mask_maker', 'pseudo_job')
_REQUIRED_SECTIONS = GENERATOR_SECTIONS[:3]


@HOOKS.register_module()
class PseudoLabelHook(Hook):
    """Generate or reuse the training's pseudo labels before the first batch (see module docs).

    Args:
        mode: ``'auto'`` (reuse matching complete labels, resume incomplete
            ones, regenerate changed ones), ``'reuse'`` (never generate) or
            ``'regenerate'`` (always delete and remake).
        out_dir: Pseudo-label folder. None = the folder the train dataset
            reads (``<dir>`` of ``data_prefix.seg_map_path=<dir>/masks``);
            ``<work_dir>/pseudo`` if the train dataset has no
            ``PseudoLabelSegDataset``. A given value must match the dataset.
        generator_config: Optional path of a generator config (e.g.
            ``configs/clip_es_voc.py``) to read the generator sections from,
            for training configs that cannot inherit it (mmseg configs that
            define ``data_root``/``default_scope`` too: mmengine refuses
            duplicate keys among ``_base_`` files). Sections present in the
            training config (e.g. from ``--cfg-options generator.clip.pretrained=...``)
            are merged over it. Relative paths: current directory first, then
            the training config's folder.
        allow_failures: Train without the images that failed (warning)
            instead of stopping with an error.
        report: After generating, write the HTML inspection report
            (``<out_dir>/report/index.html``, :mod:`wsss_mmseg.report`).
    """

    priority = 'HIGH'

    def __init__(self, *, mode: str = 'auto', out_dir: Optional[str] = None,
                 generator_config: Optional[str] = None, allow_failures: bool = False,
                 report: bool = False) -> None:
        if mode not in MODES:
            raise ValueError(f'PseudoLabelHook mode must be one of {MODES}, got {mode!r}')
        self.mode = mode
        self.out_dir = out_dir
        self.generator_config = generator_config
        self.allow_failures = bool(allow_failures)
        self.report = bool(report)
        self.last_action: Optional[str] = None  #: what the last before_train did

    # ------------------------------------------------------------ config
    def _generator_cfg(self, runner: Any) -> Optional[Any]:
        """The generator sections (file of ``generator_config``, training config over it)."""
        from mmengine.config import Config
        sections: Dict[str, Any] = {}
        if self.generator_config:
            path = self._find_generator_config(runner)
            file_cfg = Config.fromfile(path)
            sections = {s: copy.deepcopy(file_cfg[s]) for s in GENERATOR_SECTIONS
                        if file_cfg.get(s) is not None}
        cfg = Config(sections)
        overrides = {s: copy.deepcopy(runner.cfg[s]) for s in GENERATOR_SECTIONS
                     if runner.cfg.get(s) is not None}
        if overrides:
            cfg.merge_from_dict(overrides)
        absent = [s for s in _REQUIRED_SECTIONS if cfg.get(s) is None]
        if absent:
            if self.mode == 'reuse':
                return None
            where = (f'the training config or {self.generator_config}' if self.generator_config
                     else 'the training config')
            raise KeyError(
                f'PseudoLabelHook(mode={self.mode!r}) needs the generator sections '
                f'{list(_REQUIRED_SECTIONS)}; {where} lacks {absent}. Inherit a generator config '
                "(e.g. _base_ = ['./clip_es_voc.py']), set PseudoLabelHook(generator_config=...), "
                "or use mode='reuse' for labels made beforehand")
        return cfg

    def _find_generator_config(self, runner: Any) -> str:
        path = os.path.expanduser(str(self.generator_config))
        tried = [osp.abspath(path)]
        if osp.isfile(path):
            return path
        cfg_file = getattr(runner.cfg, 'filename', None)
        if cfg_file and not osp.isabs(path):
            candidate = osp.join(osp.dirname(osp.abspath(cfg_file)), path)
            tried.append(candidate)
            if osp.isfile(candidate):
                return candidate
        raise FileNotFoundError(f'PseudoLabelHook: generator_config not found; tried '
                                f'{", ".join(tried)}')

    def _resolve_out_dir(self, runner: Any, pseudo_sets: Sequence[Any]) -> Tuple[Path, bool]:
        """The pseudo-label folder; second value: whether the train dataset reads it."""
        dirs = {}
        for ds in pseudo_sets:
            mask_dir, conf_dir = label_dirs_of(ds)
            root = osp.dirname(mask_dir)
            if osp.basename(mask_dir) != 'masks' or conf_dir != osp.join(root, 'confidence'):
                raise ValueError(
                    f'PseudoLabelHook: the train dataset reads masks from {mask_dir} and '
                    f'confidence maps from {conf_dir}, but the pseudo-label job writes '
                    '<dir>/masks and <dir>/confidence. Set data_prefix.seg_map_path=<dir>/masks '
                    'and leave conf_dir/conf_path unset (or <dir>/confidence)')
            dirs[osp.realpath(root)] = root
        if len(dirs) > 1:
            raise ValueError(f'PseudoLabelHook: the train dataset reads pseudo labels from '
                             f'several folders {sorted(dirs.values())}; one hook serves one folder')
        if self.out_dir is not None:
            out = osp.abspath(os.path.expanduser(str(self.out_dir)))
            if dirs and osp.realpath(out) not in dirs:
                raise ValueError(
                    f'PseudoLabelHook(out_dir={self.out_dir!r}) differs from the folder the train '
                    f'dataset reads ({next(iter(dirs.values()))}/masks); make them one setting '
                    '(leave out_dir unset to follow the dataset)')
            return Path(out), bool(dirs)
        if dirs:
            return Path(next(iter(dirs.values()))), True
        return Path(osp.abspath(osp.join(runner.work_dir, 'pseudo'))), False

    # -------------------------------------------------------------- main
    def before_train(self, runner: Any) -> None:
        """Make sure the pseudo labels exist and match the config (see module docs).

        Args:
            runner: The mmengine runner.

        Raises:
            RuntimeError: Images failed (without ``allow_failures``), or
                another process is generating into the same folder.
            FileNotFoundError: Training samples without label files.
            ValueError / KeyError: Config problems (see ``decide_action``).
        """
        from mmengine.dist import barrier, get_dist_info
        rank, world_size = get_dist_info()
        started = time.perf_counter()
        loop = runner.train_loop
        dataloader = getattr(loop, 'dataloader', None)
        dataset = getattr(dataloader, 'dataset', None)
        pseudo_sets = pseudo_datasets_of(dataset)
        out_dir, dataset_reads = self._resolve_out_dir(runner, pseudo_sets)
        if not dataset_reads:
            runner.logger.warning(
                f'PseudoLabelHook: no PseudoLabelSegDataset in the train dataloader; using '
                f'{out_dir} and skipping the per-file check of the training set')
        cfg = self._generator_cfg(runner)
        if self.report and cfg is not None:  # before planning: the plan holds the job options
            cfg.merge_from_dict(dict(pseudo_job=dict(report=True)))

        # rank 0: the decision (shared), the work dir's lock (workdir's lock file: closing it
        # releases the flock) and the job plan (label source + fingerprint, made once)
        decision: Dict[str, Any] = {}
        lock = job_plan = None
        if rank == 0:
            try:
                decision, lock, job_plan = make_decision(cfg, out_dir, mode=self.mode,
                                                         training_started=runner.iter > 0)
            except Exception as exc:  # noqa: BLE001 - every rank raises it
                self._share([dict(error=(type(exc).__name__, str(exc)))])
                raise
        try:
            decision = self._share([decision])[0]
            if 'error' in decision:
                name, msg = decision['error']
                raise error_types().get(name, RuntimeError)(msg)
            action, reason = decision['action'], decision['reason']
            self.last_action = action
            if decision.get('warning'):
                runner.logger.warning(f'PseudoLabelHook: {decision["warning"]}')
            summary = None
            if action == 'reuse':
                n = decision['done'] if decision['total'] else sum(len(ds) for ds in pseudo_sets)
                runner.logger.info(f'PseudoLabelHook: reused {n} existing pseudo label(s) '
                                   f'in {out_dir} ({reason})')
            else:
                verb = dict(generate='generating', regenerate='regenerating',
                            resume='completing')[action]
                runner.logger.info(f'PseudoLabelHook: {verb} the pseudo labels in {out_dir} '
                                   f'({reason}); {world_size} process(es)')
                summary = self._generate(cfg, out_dir, resume=action != 'regenerate', runner=runner,
                                         plan=job_plan)
        finally:
            if lock is not None:
                lock.close()
            job_plan = None  # the label source is not kept through the training

        generated = summary is not None
        if generated:
            barrier()
            counts = summary.get('counts') or {}
            failures = summary.get('failures') or []
            runner.logger.info(
                f'PseudoLabelHook: generated {counts.get("processed", 0)} pseudo label(s) in '
                f'{out_dir} in {time.perf_counter() - started:.1f} s ({counts.get("done", 0)}/'
                f'{counts.get("total", 0)} images done, {counts.get("skipped_resumed", 0)} kept, '
                f'{len(failures)} failed)')
            self._log_eval(runner, summary)
            if failures:
                from ..pseudo.job import summarize_failures
                text = summarize_failures(failures)
                if not self.allow_failures:
                    raise RuntimeError(
                        f'PseudoLabelHook: {text}\nTraining stopped: a segmenter must not train on '
                        f'a partial set of pseudo labels. Fix these images or their labels and '
                        f'run again (the {counts.get("done", 0)} finished images are kept and '
                        f'not recomputed; details in {out_dir / "failures.txt"}), or set '
                        'PseudoLabelHook(allow_failures=True) to train without them')
                runner.logger.warning(f'PseudoLabelHook: {text}\nallow_failures=True: training '
                                      'without them')

        dropped = self._check_training_files(runner, pseudo_sets, dataset)
        if generated and not dropped:  # (a rebuilt dataloader has a fresh iterator)
            restart_train_iterator(loop)
        runner.logger.info(f'PseudoLabelHook: done in {time.perf_counter() - started:.1f} s')


    @staticmethod
    def _share(objs: List[Any]) -> List[Any]:
        from mmengine.dist import broadcast_object_list, get_dist_info
        if get_dist_info()[1] > 1:
            broadcast_object_list(objs, src=0)
        return objs

    @staticmethod
    def _generate(cfg: Any, out_dir: Path, *, resume: bool, runner: Any,
                  plan: Optional[Any]) -> Dict[str, Any]:
        """Run the job (every rank); ``plan``: rank 0's :class:`~wsss_mmseg.pseudo.job.JobPlan`."""
        from ..pseudo.job import run_pseudo_job
        with preserved_process_state():
            try:
                return run_pseudo_job(cfg, work_dir=out_dir, resume=resume, logger=runner.logger,
                                      lock_held=True, plan=plan)
            finally:
                import gc
                gc.collect()  # the generator (CLIP) is no longer referenced
                if torch.cuda.is_available() and torch.cuda.is_initialized():
                    torch.cuda.empty_cache()

    @staticmethod
    def _log_eval(runner: Any, summary: Mapping[str, Any]) -> None:
        evaluation = summary.get('evaluation') or {}
        for name, v in (evaluation.get('variants') or {}).items():
            if v.get('miou') is not None:
                runner.logger.info(f'PseudoLabelHook: pseudo-label mIoU [{name}] '
                                   f'{100 * v["miou"]:.2f} on {evaluation.get("num_images")} '
                                   'images with GT masks')

    def _check_training_files(self, runner: Any, pseudo_sets: Sequence[Any],
                              dataset: Any) -> bool:
        """Every training sample needs its files; returns True if samples were dropped."""
        from mmengine.dist import get_dist_info
        if not pseudo_sets:
            return False
        rank = get_dist_info()[0]
        missing = self._share([missing_label_files(pseudo_sets) if rank == 0 else None])[0]
        if not missing:
            return False
        total = sum(len(ds) for ds in pseudo_sets)
        text = (f'{len(missing)} of {total} training image(s) have no pseudo label or '
                f'confidence file:\n{list_missing(missing)}')
        if not self.allow_failures:
            raise FileNotFoundError(
                f'PseudoLabelHook: {text}\nEither their generation failed, or the training '
                "list contains images that the config's pseudo_dataset does not cover. Fix "
                'the lists, or set PseudoLabelHook(allow_failures=True) to train without them')
        if len(pseudo_sets) != 1 or pseudo_sets[0] is not dataset:
            raise ValueError(
                f'PseudoLabelHook: {text}\nallow_failures=True can only remove images when the '
                'train dataset is a PseudoLabelSegDataset itself (found '
                f'{type(dataset).__name__}); remove them from the training list instead')
        keep = sorted(set(range(len(dataset))) - {m['index'] for m in missing})
        if not keep:
            raise FileNotFoundError(f'PseudoLabelHook: {text}\nno training image is left')
        runner.logger.warning(f'PseudoLabelHook: {text}\nallow_failures=True: training on the '
                              f'other {len(keep)} image(s)')
        replace_train_dataset(runner, dataset.get_subset(keep))
        return True
