"""Test-only fault for mmseg's own ``tools/train.py`` (imported through ``custom_imports``).

With ``WSSS_TEST_KILL_CKPT=<file name>`` set, writing that checkpoint file
writes half of its bytes and then SIGKILLs the process: a kill in the middle
of ``CheckpointHook`` saving. Nothing happens when the variable is unset.
"""
import os
import signal

from mmengine.fileio.backends import local_backend

_TARGET = os.environ.get('WSSS_TEST_KILL_CKPT')
if _TARGET:
    _real_put = local_backend.LocalBackend.put

    def _put(self, obj, filepath):
        if str(filepath).endswith(_TARGET):
            with open(filepath, 'wb') as f:
                f.write(obj[: len(obj) // 2])
                f.flush()
            os.kill(os.getpid(), signal.SIGKILL)
        return _real_put(self, obj, filepath)

    local_backend.LocalBackend.put = _put
