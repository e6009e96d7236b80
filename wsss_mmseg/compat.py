"""Compatibility of the two supported mmseg stacks with today's torch, on CPU.

This is the ONE place where the plugin adapts third-party code. Each fix has a
condition; where the condition is absent (full mmcv with compiled ops, CUDA present,
an mmengine fork that already handles the case) the fix does nothing. No version
numbers are asserted: every condition is detected from behaviour.

Fixes:

``mmcv_ops``
    mmcv-lite has no compiled ``mmcv._ext``, so ``import mmcv.ops`` fails, and
    upstream mmsegmentation 1.2.2 imports ``mmcv.ops`` unconditionally in a few
    modules (``point_sample`` and ``sigmoid_focal_loss``), which breaks
    ``import mmseg.models``. Where ``mmcv.ops`` cannot be imported, a small
    replacement package is registered under that name: the pure-torch parts of
    mmcv.ops (``point_sample``, ``bilinear_grid_sample``, ``rel_roi_point_to_rel_img_point``
    ...) come from mmcv's own pure-python file, and every compiled op raises
    ``ModuleNotFoundError`` naming the op, exactly as mmseg's optional imports
    expect. ``sigmoid_focal_loss`` (only reached on CUDA) raises a clear error.
``torch_load``
    torch>=2.6 loads with ``weights_only=True`` by default and refuses the numpy
    and ``HistoryBuffer`` objects that mmengine stores in its checkpoints, so
    ``--resume`` fails on upstream mmengine 0.10.7. Where mmengine does not handle
    this itself, exactly those classes are added to torch's safe globals: loading
    stays ``weights_only`` (no arbitrary code from a checkpoint).
``cpu_dist``
    mmengine's pytorch and slurm launchers call ``torch.cuda.set_device`` and keep
    the configured backend (usually ``nccl``). Without CUDA they now skip
    ``set_device`` and use ``gloo`` (the slurm launcher keeps mmengine's own
    ``SLURM_*`` -> ``RANK``/``WORLD_SIZE``/``MASTER_ADDR`` logic; only the
    ``set_device`` call is skipped). With CUDA the original launchers run as is.
    Together with :class:`wsss_mmseg.models.wrappers.CPUCompatibleDDP` (which drops
    ``device_ids`` for CPU modules) this makes 2-process CPU training work.

``msda_warning``
    mmcv's ``cnn/bricks/transformer.py`` warns ``Fail to import
    ``MultiScaleDeformableAttention`` from ``mmcv.ops.multi_scale_deform_attn`` ...``
    on every import of mmseg's models where mmcv has no compiled ops (mmcv-lite;
    both stacks). Where the ``mmcv_ops`` shim is active, a warnings filter ignores
    exactly that message from exactly that module (any other warning, and that
    message from anywhere else, still shows).
``onedl_message``
    onedl-mmsegmentation's ``mmseg/datasets/__init__.py`` and
    ``datasets/transforms/__init__.py`` try optional OneDL modules and, where their
    dependency is missing, call ``print_log('Could not import OneDL',
    level=logging.DEBUG)`` without a logger -- which *prints* the debug message to
    stdout, twice per process. Where mmseg ships those optional modules and
    ``mmseg.datasets`` is not imported yet, ``mmseg.datasets`` is imported here with
    ``mmengine.logging.print_log`` temporarily wrapped: that one message (logger
    ``None``, level ``DEBUG``) goes to ``logging.getLogger('mmseg')`` at DEBUG level
    (visible with debug logging) instead of stdout; every other call is passed on,
    and the wrapper is removed afterwards. Import errors are not caught.

``applied()`` reports which fixes are active; ``python -m wsss_mmseg`` prints it.
"""
from __future__ import annotations

import contextlib
import functools
import importlib
import importlib.util
import logging
import os
import sys
import types
import warnings
from typing import Callable, Dict, Iterator, List

_APPLIED: Dict[str, str] = {}

# Names of pure-python helpers that mmcv.ops exports from its point_sample module.
_POINT_SAMPLE_NAMES = ('bilinear_grid_sample', 'normalize', 'denormalize',
                       'point_sample', 'rel_roi_point_to_rel_img_point',
                       'rel_roi_point_to_abs_img_point', 'abs_img_point_to_rel_img_point',
                       'get_shape_from_feature_map', 'SimpleRoIAlign')


def applied() -> Dict[str, str]:
    """Which fixes are active, with the reason each was needed."""
    return dict(_APPLIED)


# --------------------------------------------------------------------------- mmcv.ops
def mmcv_ops_missing() -> bool:
    """True where mmcv is installed but its compiled ops cannot be imported."""
    if importlib.util.find_spec('mmcv') is None:
        return False
    if 'mmcv.ops' in sys.modules:
        return getattr(sys.modules['mmcv.ops'], '__wsss_mmseg_shim__', False)
    try:
        importlib.import_module('mmcv.ops')
    except ModuleNotFoundError as err:
        # Drop whatever partial import state the failed attempt left behind.
        for name in [m for m in sys.modules if m == 'mmcv.ops' or m.startswith('mmcv.ops.')]:
            del sys.modules[name]
        return 'mmcv._ext' in str(err) or '_ext' in str(err)
    return False


def _load_pure_point_sample() -> types.ModuleType | None:
    """Load mmcv's pure-python ``ops/point_sample.py`` without ``ops/__init__``."""
    import mmcv
    path = os.path.join(os.path.dirname(mmcv.__file__), 'ops', 'point_sample.py')
    if not os.path.isfile(path):
        return None
    spec = importlib.util.spec_from_file_location('mmcv.ops.point_sample', path)
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except ImportError:  # the file needs compiled code in this mmcv version
        return None
    return module


def _sigmoid_focal_loss_unavailable(*args, **kwargs):
    raise RuntimeError(
        'mmcv.ops.sigmoid_focal_loss needs mmcv built with compiled ops; this '
        'environment has mmcv-lite. mmseg uses it only for FocalLoss on CUDA: '
        'use CrossEntropyLoss, or install full mmcv.')


def _make_mmcv_ops_shim() -> types.ModuleType:
    shim = types.ModuleType('mmcv.ops')
    shim.__doc__ = ('Stand-in for mmcv.ops installed by wsss_mmseg.compat because '
                    'mmcv has no compiled ops here (mmcv-lite).')
    shim.__wsss_mmseg_shim__ = True
    shim.__path__ = []  # a package, so `import mmcv.ops.x` fails cleanly
    pure = _load_pure_point_sample()
    if pure is not None:
        sys.modules['mmcv.ops.point_sample'] = pure
        for name in _POINT_SAMPLE_NAMES:
            if hasattr(pure, name):
                setattr(shim, name, getattr(pure, name))
    shim.sigmoid_focal_loss = _sigmoid_focal_loss_unavailable

    def __getattr__(name: str):
        if name.startswith('__'):
            raise AttributeError(name)
        raise ModuleNotFoundError(
            f'mmcv.ops.{name} needs mmcv with compiled ops (No module named '
            f"'mmcv._ext'); this environment has mmcv-lite", name='mmcv._ext')

    shim.__getattr__ = __getattr__
    return shim


def _fix_mmcv_ops() -> None:
    if not mmcv_ops_missing():
        return
    shim = _make_mmcv_ops_shim()
    sys.modules['mmcv.ops'] = shim
    import mmcv
    mmcv.ops = shim
    _APPLIED['mmcv_ops'] = ('mmcv has no compiled ops (mmcv-lite): mmcv.ops replaced by '
                            'its pure-torch parts')


# --------------------------------------------------------------------------- torch.load
def _torch_loads_weights_only_by_default() -> bool:
    import inspect

    import torch
    default = inspect.signature(torch.load).parameters['weights_only'].default
    if default is None:  # torch>=2.6: None means "True unless the env says otherwise"
        env = os.environ.get('TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD', '').lower()
        return env not in ('1', 'true', 'yes')
    return bool(default)


def mmengine_checkpoint_safe_globals() -> List[Callable]:
    """The non-tensor classes mmengine writes into a training checkpoint."""
    import numpy as np
    np_core = getattr(np, '_core', None) or np.core
    # numpy>=2 pickles dtype classes as getattr(numpy.dtypes, name); torch's weights-only
    # unpickler still refuses to *call* anything that is not itself allowlisted.
    classes: List[Callable] = [
        getattr, slice,
        np_core.multiarray._reconstruct, np.ndarray, np.dtype, np_core.multiarray.scalar,
    ]
    for dt in (np.uint8, np.int32, np.int64, np.uint32, np.float16, np.float32, np.float64,
               np.bool_):
        classes.append(type(np.dtype(dt)))
    from mmengine.logging.history_buffer import HistoryBuffer
    classes.append(HistoryBuffer)
    return classes


def torch_load_fix_needed() -> bool:
    """True where torch refuses mmengine checkpoints and mmengine does not cope."""
    if importlib.util.find_spec('mmengine') is None:
        return False
    if not _torch_loads_weights_only_by_default():
        return False
    ckpt = importlib.import_module('mmengine.runner.checkpoint')
    # mmengine forks that handle weights_only themselves ship their own allowlist.
    return not (hasattr(ckpt, 'get_torch_safe_globals') or hasattr(ckpt, '_safe_torch_load'))


def _fix_torch_load() -> None:
    if not torch_load_fix_needed():
        return
    import torch
    torch.serialization.add_safe_globals(mmengine_checkpoint_safe_globals())
    _APPLIED['torch_load'] = ('torch loads weights_only by default and mmengine does not '
                              'allow its checkpoint classes: numpy arrays/scalars and '
                              'HistoryBuffer added to torch safe globals')


# --------------------------------------------------------------------------- dist on CPU
def _cpu_safe_init_dist_pytorch(original: Callable) -> Callable:

    @functools.wraps(original)
    def init_dist_pytorch(backend: str = 'nccl', init_backend: str = 'torch', **kwargs):
        import torch
        if torch.cuda.is_available():
            return original(backend, init_backend=init_backend, **kwargs)
        import torch.distributed as torch_dist
        if backend != 'gloo':
            print(f'[wsss_mmseg] no CUDA: using the gloo backend instead of {backend!r}',
                  file=sys.stderr)
        if init_backend != 'torch':
            raise RuntimeError(f'init_backend={init_backend!r} needs CUDA; without a GPU '
                               "only init_backend='torch' (gloo) is supported")
        torch_dist.init_process_group(backend='gloo', **kwargs)

    init_dist_pytorch.__wsss_mmseg_wrapped__ = original
    return init_dist_pytorch


def _cpu_safe_init_dist_slurm(original: Callable) -> Callable:
    """mmengine's slurm launcher without CUDA: its environment logic, gloo, no set_device."""

    @functools.wraps(original)
    def init_dist_slurm(backend: str = 'nccl', port=None, init_backend: str = 'torch', **kwargs):
        import torch
        if torch.cuda.is_available():
            return original(backend, port=port, init_backend=init_backend, **kwargs)
        if init_backend != 'torch':
            raise RuntimeError(f'init_backend={init_backend!r} needs CUDA; without a GPU '
                               "only init_backend='torch' (gloo) is supported")
        if backend != 'gloo':
            print(f'[wsss_mmseg] no CUDA: using the gloo backend instead of {backend!r}',
                  file=sys.stderr)
        # mmengine sets MASTER_ADDR/PORT, RANK, WORLD_SIZE, LOCAL_RANK from SLURM_* and then
        # calls torch.cuda.set_device(local_rank), which fails without CUDA: skip only that.
        set_device = torch.cuda.set_device
        torch.cuda.set_device = lambda device: None
        try:
            return original('gloo', port=port, init_backend='torch', **kwargs)
        finally:
            torch.cuda.set_device = set_device

    init_dist_slurm.__wsss_mmseg_wrapped__ = original
    return init_dist_slurm


def _fix_cpu_dist() -> None:
    if importlib.util.find_spec('mmengine') is None:
        return
    import torch
    if torch.cuda.is_available():
        return
    dist_utils = importlib.import_module('mmengine.dist.utils')
    wrapped = False
    for name, wrap in (('_init_dist_pytorch', _cpu_safe_init_dist_pytorch),
                       ('_init_dist_slurm', _cpu_safe_init_dist_slurm)):
        current = getattr(dist_utils, name, None)
        if current is None or hasattr(current, '__wsss_mmseg_wrapped__'):
            continue
        setattr(dist_utils, name, wrap(current))
        wrapped = True
    if wrapped:
        _APPLIED['cpu_dist'] = ('no CUDA: the pytorch and slurm launchers skip '
                                'torch.cuda.set_device and use gloo')


# --------------------------------------------------------------------------- quiet console
#: The mmcv-lite warning silenced by ``msda_warning`` (regex, matched at the message start).
MSDA_WARNING_REGEX = (r'Fail to import ``MultiScaleDeformableAttention`` from '
                      r'``mmcv\.ops\.multi_scale_deform_attn``')
#: The module that issues it.
MSDA_WARNING_MODULE = r'mmcv\.cnn\.bricks\.transformer\Z'
#: The message printed by onedl-mmsegmentation, routed to DEBUG logging by ``onedl_message``.
ONEDL_IMPORT_MESSAGE = 'Could not import OneDL'
#: Files of onedl-mmsegmentation whose failed optional import prints that message.
_ONEDL_OPTIONAL_MODULES = (('datasets', 'onedl.py'), ('datasets', 'transforms', 'loading_onedl.py'))


def _fix_msda_warning() -> None:
    if 'mmcv_ops' not in _APPLIED:  # full mmcv imports the op: no warning
        return
    warnings.filterwarnings('ignore', message=MSDA_WARNING_REGEX, category=UserWarning,
                            module=MSDA_WARNING_MODULE)
    _APPLIED['msda_warning'] = ('mmcv has no compiled ops: mmcv\'s warning that '
                                'MultiScaleDeformableAttention cannot be imported is ignored')


def onedl_message_expected() -> bool:
    """True where importing ``mmseg.datasets`` would print 'Could not import OneDL'.

    That is: mmseg ships the optional OneDL modules (onedl-mmsegmentation) and
    ``mmseg.datasets`` has not been imported yet in this process.
    """
    if 'mmseg.datasets' in sys.modules:
        return False
    spec = importlib.util.find_spec('mmseg')  # top-level: imports nothing
    if spec is None or not spec.submodule_search_locations:
        return False
    root = list(spec.submodule_search_locations)[0]
    return any(os.path.isfile(os.path.join(root, *parts)) for parts in _ONEDL_OPTIONAL_MODULES)


def quiet_print_log(original: Callable) -> Callable:
    """``print_log`` that sends only the 'Could not import OneDL' debug print to logging.

    Args:
        original: mmengine's ``print_log``.

    Returns:
        A wrapper: ``print_log(ONEDL_IMPORT_MESSAGE, level=logging.DEBUG)`` without a
        logger goes to ``logging.getLogger('mmseg').debug`` (and is counted in
        ``wrapper.routed``); every other call goes to ``original`` unchanged.
    """

    @functools.wraps(original)
    def print_log(msg, logger=None, level=logging.INFO):
        if logger is None and level == logging.DEBUG and msg == ONEDL_IMPORT_MESSAGE:
            print_log.routed += 1
            logging.getLogger('mmseg').debug(msg)
            return None
        return original(msg, logger=logger, level=level)

    print_log.routed = 0
    return print_log


@contextlib.contextmanager
def _print_log_wrapped() -> Iterator[Callable]:
    import mmengine.logging as mme_logging
    original = mme_logging.print_log
    quiet = quiet_print_log(original)
    mme_logging.print_log = quiet
    try:
        yield quiet
    finally:
        mme_logging.print_log = original


def _fix_onedl_message() -> None:
    if importlib.util.find_spec('mmengine') is None or not onedl_message_expected():
        return
    with _print_log_wrapped() as quiet:
        importlib.import_module('mmseg.datasets')
    if quiet.routed:
        _APPLIED['onedl_message'] = ("mmseg's optional OneDL modules are not importable: its "
                                     "'Could not import OneDL' debug print goes to the 'mmseg' "
                                     'logger at DEBUG level instead of stdout')


def apply() -> Dict[str, str]:
    """Apply every fix whose condition holds; idempotent. Returns :func:`applied`."""
    _fix_mmcv_ops()
    _fix_msda_warning()
    _fix_torch_load()
    _fix_cpu_dist()
    _fix_onedl_message()
    return applied()
