"""Test-only generator that records which images it processed (per process).

``WsssTestRecordingGenerator`` behaves like ``pseudo_fakes.FakeGenerator`` and
appends ``sha1(pixels)`` of every image it generates for to
``$WSSS_TEST_RECORD_DIR/calls.<pid>`` (one line each), so a test can prove that
a multi-process run handled every image exactly once.
"""
import hashlib
import os

from mmseg.registry import MODELS

import pseudo_fakes as pf

RECORDING_GENERATOR = 'WsssTestRecordingGenerator'


@MODELS.register_module(name=RECORDING_GENERATOR, force=True)
class RecordingGenerator(pf.FakeGenerator):
    """:class:`pseudo_fakes.FakeGenerator` that logs an image hash per call."""

    def generate_one(self, img, label_ids):
        out = super().generate_one(img, label_ids)
        record_dir = os.environ.get('WSSS_TEST_RECORD_DIR')
        if record_dir:
            with open(os.path.join(record_dir, f'calls.{os.getpid()}'), 'a') as f:
                f.write(hashlib.sha1(img.tobytes()).hexdigest() + '\n')
        return out
