"""Inspection report of a pseudo-label work dir: a static, self-contained HTML page.

``write_report(work_dir)`` writes ``<work_dir>/report/index.html`` with the run
summary, per-class scores, a confusion matrix, per-class confidence histograms,
the μ sweep (mIoU and labelled-pixel coverage against the confidence threshold)
and a gallery of photo | pseudo mask | confidence | GT thumbnails, worst first.
``tools/report.py`` is its command line. Modules: :mod:`.workdir` (reading the
work dir), :mod:`.statistics` (streamed figures), :mod:`.gallery` (selection,
thumbnails), :mod:`.plots` (matplotlib), :mod:`.render` (escaped HTML),
:mod:`.builder` (the two passes).
"""
from .builder import DEFAULT_GALLERY_SIZE, write_report
from .workdir import NotAWorkDirError, ReportArgumentError

__all__ = ['write_report', 'NotAWorkDirError', 'ReportArgumentError', 'DEFAULT_GALLERY_SIZE']
