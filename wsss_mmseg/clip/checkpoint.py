"""Safe reading of CLIP checkpoint files (no arbitrary code execution by default).

Three container formats are understood:

* plain ``torch.save`` pickles (zip or legacy format) -- read with
  ``torch.load(..., weights_only=True)``; a file that needs arbitrary Python
  classes is refused unless ``allow_unsafe_pickle=True`` is passed explicitly;
* TorchScript archives (OpenAI's released ``.pt`` files) -- read by a restricted
  unpickler that only rebuilds the archive's tensors and the module tree; no
  TorchScript code is compiled and nothing in the archive is executed.  Only when
  that reader refuses the archive and ``allow_unsafe_pickle=True`` is given does the
  loader fall back to ``torch.jit.load`` (which compiles the archive's code);
* ``.safetensors`` files, when the ``safetensors`` package is importable.

The result is a flat ``{key: tensor}`` state dict (``{'state_dict': ...}`` wrappers
and ``module.`` prefixes removed).
"""
from __future__ import annotations

import io
import os
import pickle
import re
import zipfile
from dataclasses import dataclass
from typing import Any, Dict, List, Mapping, Optional, Set, Tuple, Union

import torch

__all__ = [
    'CheckpointError',
    'CheckpointMismatchError',
    'UnsafeCheckpointError',
    'LoadedCheckpoint',
    'load_checkpoint_file',
    'read_torchscript_tensors',
    'is_torchscript_archive',
    'unwrap_state_dict',
]

PathLike = Union[str, 'os.PathLike[str]']


class CheckpointError(ValueError):
    """A checkpoint file cannot be read or does not contain a usable state dict."""


class CheckpointMismatchError(CheckpointError):
    """A checkpoint's tensors do not fit the requested model architecture."""


class UnsafeCheckpointError(CheckpointError):
    """A checkpoint needs arbitrary Python code to be unpickled and was refused."""


@dataclass(frozen=True)
class LoadedCheckpoint:
    """A checkpoint read from disk.

    Attributes:
        path: Absolute path of the file.
        file_format: ``'torchscript'``, ``'pickle'`` or ``'safetensors'``.
        state_dict: Flat ``{key: tensor}`` mapping (wrappers and ``module.`` removed).
        used_unsafe_pickle: True when the file could only be read by executing its
            pickle (``allow_unsafe_pickle=True``).
    """

    path: str
    file_format: str
    state_dict: Dict[str, torch.Tensor]
    used_unsafe_pickle: bool = False


# --------------------------------------------------------------------------------------
# TorchScript archives
# --------------------------------------------------------------------------------------

_STORAGE_DTYPES: Dict[str, torch.dtype] = {
    'FloatStorage': torch.float32,
    'HalfStorage': torch.float16,
    'BFloat16Storage': torch.bfloat16,
    'DoubleStorage': torch.float64,
    'LongStorage': torch.int64,
    'IntStorage': torch.int32,
    'ShortStorage': torch.int16,
    'CharStorage': torch.int8,
    'ByteStorage': torch.uint8,
    'BoolStorage': torch.bool,
}


class _StorageType:
    """Stand-in for ``torch.<X>Storage`` classes referenced by an archive's pickle."""

    def __init__(self, dtype: torch.dtype) -> None:
        self.dtype = dtype


class _ScriptObject:
    """Inert stand-in for a ``__torch__.*`` TorchScript class instance.

    It only records the attribute state the pickle assigns to it; no method of the
    scripted class is ever compiled or called.
    """

    qualified_name: str = ''

    def __setstate__(self, state: Any) -> None:
        self.__dict__['_state'] = state

    @property
    def state(self) -> Any:
        return self.__dict__.get('_state')


def _rebuild_tensor(storage: torch.Tensor, storage_offset: int, size: Tuple[int, ...],
                    stride: Tuple[int, ...], requires_grad: bool = False,
                    backward_hooks: Any = None, metadata: Any = None) -> torch.Tensor:
    """Safe replacement of ``torch._utils._rebuild_tensor_v2`` over a flat storage."""
    del requires_grad, backward_hooks, metadata
    return storage.as_strided(tuple(size), tuple(stride), int(storage_offset))


def _identity_list(value: Any) -> Any:
    return value


def _restore_type_tag(value: Any, type_str: str) -> Any:
    del type_str
    return value


class _TorchScriptUnpickler(pickle.Unpickler):
    """Unpickler for the ``data.pkl`` of a TorchScript archive with an allow-list."""

    _ALLOWED = {
        ('torch._utils', '_rebuild_tensor_v2'): _rebuild_tensor,
        ('torch._utils', '_rebuild_tensor'): _rebuild_tensor,
        ('collections', 'OrderedDict'): dict,
        ('torch.jit._pickle', 'build_intlist'): _identity_list,
        ('torch.jit._pickle', 'build_doublelist'): _identity_list,
        ('torch.jit._pickle', 'build_boollist'): _identity_list,
        ('torch.jit._pickle', 'build_tensorlist'): _identity_list,
        ('torch.jit._pickle', 'restore_type_tag'): _restore_type_tag,
    }

    def __init__(self, data: bytes, archive: zipfile.ZipFile, prefix: str, path: str) -> None:
        super().__init__(io.BytesIO(data))
        self._archive = archive
        self._prefix = prefix
        self._path = path
        self._storages: Dict[str, torch.Tensor] = {}
        self._classes: Dict[str, type] = {}

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in self._ALLOWED:
            return self._ALLOWED[(module, name)]
        if module == 'torch' and name in _STORAGE_DTYPES:
            return _StorageType(_STORAGE_DTYPES[name])
        if module == '__torch__' or module.startswith('__torch__.'):
            qualified = f'{module}.{name}'
            if qualified not in self._classes:
                self._classes[qualified] = type(name, (_ScriptObject,), {'qualified_name': qualified})
            return self._classes[qualified]
        raise UnsafeCheckpointError(
            f"TorchScript archive '{self._path}' references the Python global "
            f"'{module}.{name}', which the safe tensor reader does not allow. If you trust "
            "the file, pass allow_unsafe_pickle=True to load it with torch.jit.load.")

    def persistent_load(self, pid: Any) -> torch.Tensor:
        if not (isinstance(pid, tuple) and len(pid) >= 5 and pid[0] == 'storage'
                and isinstance(pid[1], _StorageType)):
            raise UnsafeCheckpointError(
                f"TorchScript archive '{self._path}' has an unsupported persistent id {pid!r}.")
        storage_type, key, numel = pid[1], str(pid[2]), int(pid[4])
        if key not in self._storages:
            member = f'{self._prefix}data/{key}'
            try:
                raw = self._archive.read(member)
            except KeyError as exc:
                raise CheckpointError(
                    f"TorchScript archive '{self._path}' lacks the tensor record '{member}'.") from exc
            itemsize = torch.empty((), dtype=storage_type.dtype).element_size()
            if len(raw) < numel * itemsize:
                raise CheckpointError(
                    f"TorchScript archive '{self._path}': record '{member}' holds {len(raw)} bytes, "
                    f'{numel * itemsize} expected.')
            buffer = bytearray(raw[:numel * itemsize])
            if numel == 0:
                flat = torch.empty(0, dtype=storage_type.dtype)
            else:
                flat = torch.frombuffer(buffer, dtype=storage_type.dtype)
            self._storages[key] = flat
        return self._storages[key]


_CLASS_RE = re.compile(r'^class (\w+)\(Module\):\n((?:[ \t]+.*\n|\n)*)', re.MULTILINE)
_NAMES_RE = re.compile(r'"(\w+)"')


def _declared_state(archive: zipfile.ZipFile, prefix: str) -> Dict[str, Set[str]]:
    """``{qualified class name: parameter and buffer names}`` from the archive's code."""
    declared: Dict[str, Set[str]] = {}
    code_root = f'{prefix}code/'
    for member in archive.namelist():
        if not (member.startswith(code_root) and member.endswith('.py')):
            continue
        module = member[len(code_root):-3].replace('/', '.')
        text = archive.read(member).decode('utf-8', errors='replace')
        for match in _CLASS_RE.finditer(text):
            body = match.group(2)
            names: Set[str] = set()
            for field in ('__parameters__', '__buffers__'):
                found = re.search(rf'^\s+{field} = \[(.*?)\]', body, re.MULTILINE)
                if found:
                    names.update(_NAMES_RE.findall(found.group(1)))
            declared[f'{module}.{match.group(1)}'] = names
    return declared


def _archive_prefix(archive: zipfile.ZipFile) -> Optional[str]:
    """Folder prefix (``'name/'``) of a TorchScript archive, None if not TorchScript."""
    names = archive.namelist()
    for member in names:
        if member.endswith('constants.pkl'):
            prefix = member[:-len('constants.pkl')]
            if f'{prefix}data.pkl' in names:
                return prefix
    return None


def is_torchscript_archive(path: PathLike) -> bool:
    """Whether ``path`` is a zip file laid out like a TorchScript archive.

    Args:
        path: File to inspect.

    Returns:
        True for TorchScript archives (a ``constants.pkl`` next to ``data.pkl``).
    """
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        return _archive_prefix(archive) is not None


def read_torchscript_tensors(path: PathLike) -> Dict[str, torch.Tensor]:
    """Read the parameters and buffers of a TorchScript archive without running it.

    The archive's ``data.pkl`` is unpickled with an allow-list (tensor rebuilding and
    inert stand-ins for ``__torch__`` classes); the parameter/buffer names of each
    scripted class are read from the declarations in the archive's ``code/`` folder
    (classes without a declaration contribute all their tensor attributes). The result
    matches ``torch.jit.load(path).state_dict()`` without compiling any code.

    Args:
        path: TorchScript archive.

    Returns:
        ``{dotted.key: tensor}`` on the CPU.

    Raises:
        UnsafeCheckpointError: The pickle references a global outside the allow-list.
        CheckpointError: The archive is malformed.
    """
    path = os.fspath(path)
    with zipfile.ZipFile(path) as archive:
        prefix = _archive_prefix(archive)
        if prefix is None:
            raise CheckpointError(f"'{path}' is not a TorchScript archive.")
        byteorder_member = f'{prefix}byteorder'
        if byteorder_member in archive.namelist():
            order = archive.read(byteorder_member).decode().strip()
            if order not in ('', 'little'):
                raise CheckpointError(
                    f"TorchScript archive '{path}' stores tensors in '{order}' byte order; "
                    'only little-endian archives are supported.')
        declared = _declared_state(archive, prefix)
        unpickler = _TorchScriptUnpickler(archive.read(f'{prefix}data.pkl'), archive, prefix, path)
        try:
            root = unpickler.load()
        except CheckpointError:
            raise
        except Exception as exc:  # malformed pickles raise many different types
            raise CheckpointError(
                f"cannot read TorchScript archive '{path}': {type(exc).__name__}: {exc}") from exc

    state: Dict[str, torch.Tensor] = {}

    def visit(obj: _ScriptObject, key_prefix: str) -> None:
        attributes = obj.state
        if not isinstance(attributes, dict):
            return
        names = declared.get(obj.qualified_name)
        for name, value in attributes.items():
            if isinstance(value, _ScriptObject):
                visit(value, f'{key_prefix}{name}.')
            elif isinstance(value, torch.Tensor) and (names is None or name in names):
                state[f'{key_prefix}{name}'] = value

    if not isinstance(root, _ScriptObject):
        raise CheckpointError(f"TorchScript archive '{path}' does not hold a scripted module.")
    visit(root, '')
    return state


# --------------------------------------------------------------------------------------
# Plain pickles, safetensors, dispatch
# --------------------------------------------------------------------------------------

def unwrap_state_dict(obj: Any, *, path: str) -> Dict[str, torch.Tensor]:
    """Extract a flat tensor state dict from a loaded checkpoint object.

    Accepts a bare ``{key: tensor}`` mapping or a ``{'state_dict': {...}}`` training
    checkpoint; a ``module.`` prefix present on every key (DataParallel) is removed.

    Args:
        obj: What the file contained.
        path: File name, for error messages.

    Returns:
        ``{key: tensor}``.

    Raises:
        CheckpointError: ``obj`` is not a mapping of tensors.
    """
    if isinstance(obj, Mapping) and 'state_dict' in obj and isinstance(obj['state_dict'], Mapping):
        obj = obj['state_dict']
    if not isinstance(obj, Mapping):
        raise CheckpointError(
            f"checkpoint '{path}' holds a {type(obj).__name__}, not a state dict "
            '(a mapping from parameter names to tensors).')
    if not obj:
        raise CheckpointError(f"checkpoint '{path}' holds an empty state dict.")
    bad = [k for k, v in obj.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise CheckpointError(
            f"checkpoint '{path}' is not a plain state dict: entries {bad[:5]} are not tensors.")
    keys: List[str] = [str(k) for k in obj.keys()]
    if all(k.startswith('module.') for k in keys):
        return {k[len('module.'):]: v for k, v in zip(keys, obj.values())}
    return dict(zip(keys, obj.values()))


def _read_pickle(path: str, allow_unsafe_pickle: bool) -> Tuple[Any, bool]:
    try:
        return torch.load(path, map_location='cpu', weights_only=True), False
    except pickle.UnpicklingError as exc:
        if not allow_unsafe_pickle:
            detail = next((line.strip() for line in str(exc).splitlines()
                           if 'GLOBAL' in line or 'Unsupported' in line), '')
            raise UnsafeCheckpointError(
                f"refusing to unpickle '{path}': it needs arbitrary Python objects, which could "
                f"execute code while loading ({detail or 'weights_only=True failed'}). Save the "
                'weights as a plain state dict (or .safetensors), or, if you trust the file, pass '
                'allow_unsafe_pickle=True.') from exc
    except Exception as exc:
        raise CheckpointError(f"cannot read checkpoint '{path}': {type(exc).__name__}: {exc}") from exc
    try:
        return torch.load(path, map_location='cpu', weights_only=False), True
    except Exception as exc:
        raise CheckpointError(f"cannot read checkpoint '{path}': {type(exc).__name__}: {exc}") from exc


def _read_safetensors(path: str) -> Dict[str, torch.Tensor]:
    try:
        from safetensors.torch import load_file
    except ImportError as exc:
        raise CheckpointError(
            f"'{path}' is a .safetensors file but the 'safetensors' package is not installed "
            '(pip install safetensors).') from exc
    try:
        return load_file(path, device='cpu')
    except Exception as exc:
        raise CheckpointError(f"cannot read safetensors file '{path}': {type(exc).__name__}: {exc}") from exc


def load_checkpoint_file(path: PathLike, *, allow_unsafe_pickle: bool = False) -> LoadedCheckpoint:
    """Read a checkpoint file into a flat CPU state dict, safely.

    Args:
        path: A TorchScript archive, a ``torch.save`` pickle or a ``.safetensors`` file.
        allow_unsafe_pickle: Allow full unpickling (arbitrary code execution) for files
            the safe readers refuse. Only for files from a trusted source.

    Returns:
        The :class:`LoadedCheckpoint`.

    Raises:
        FileNotFoundError: ``path`` does not exist or is not a file.
        UnsafeCheckpointError: The file needs arbitrary code and ``allow_unsafe_pickle``
            is False.
        CheckpointError: The file is unreadable or holds no tensor state dict.
    """
    path = os.path.abspath(os.fspath(path))
    if not os.path.isfile(path):
        raise FileNotFoundError(f"checkpoint file '{path}' does not exist (or is not a file).")
    if path.endswith('.safetensors'):
        return LoadedCheckpoint(path, 'safetensors', unwrap_state_dict(_read_safetensors(path), path=path))
    if is_torchscript_archive(path):
        try:
            state = read_torchscript_tensors(path)
            unsafe = False
        except UnsafeCheckpointError:
            if not allow_unsafe_pickle:
                raise
            state = dict(torch.jit.load(path, map_location='cpu').state_dict())
            unsafe = True
        return LoadedCheckpoint(path, 'torchscript', unwrap_state_dict(state, path=path), unsafe)
    obj, unsafe = _read_pickle(path, allow_unsafe_pickle)
    return LoadedCheckpoint(path, 'pickle', unwrap_state_dict(obj, path=path), unsafe)
