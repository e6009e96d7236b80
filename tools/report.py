"""Write the HTML inspection report of a pseudo-label work dir.

Usage::

    python tools/report.py WORK_DIR [--out DIR] [--gallery-size N] [--bins B]

``WORK_DIR`` is the folder ``tools/generate_pseudo.py`` wrote (``summary.json``,
``masks/``, ``confidence/``). The report (default ``WORK_DIR/report``) is a
static folder: open ``index.html`` in a browser, no server or network needed.
It shows the run summary, per-class IoU / precision / recall, the confusion
matrix, confidence histograms, the μ sweep (mIoU and labelled pixels against
the confidence threshold) and a gallery of the worst / best / random images
(photo | pseudo mask | confidence | GT), with a class filter.

Exit status: 0 report written; 3 bad arguments (e.g. a folder that is not a
pseudo-label work dir), with a message saying what is wrong.
"""
from __future__ import annotations

import argparse
import sys
from typing import List, Optional

EXIT_BAD_ARGUMENTS = 3


class _Parser(argparse.ArgumentParser):
    """argparse with exit status 3 for usage errors (the tool's bad-argument code)."""

    def error(self, message: str):  # noqa: D102
        self.print_usage(sys.stderr)
        self.exit(EXIT_BAD_ARGUMENTS, f'{self.prog}: error: {message}\n')


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    """Command-line arguments."""
    parser = _Parser(description=__doc__.split('\n')[0], epilog=__doc__.split('\n', 1)[1],
                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('work_dir', help='pseudo-label work dir (tools/generate_pseudo.py '
                        '--work-dir)')
    parser.add_argument('--out', help='report folder (default: WORK_DIR/report)')
    parser.add_argument('--gallery-size', type=int, default=200,
                        help='most images in the gallery (default 200)')
    parser.add_argument('--bins', type=int, default=100,
                        help='confidence bins; the μ sweep uses thresholds j/BINS (default 100)')
    parser.add_argument('--thumb-size', type=int, default=192,
                        help='longest side of the gallery thumbnails in pixels (default 192)')
    args = parser.parse_args(argv)
    if args.gallery_size < 0:
        parser.error(f'--gallery-size must be >= 0, got {args.gallery_size}')
    if args.bins < 1:
        parser.error(f'--bins must be >= 1, got {args.bins}')
    if args.thumb_size < 16:
        parser.error(f'--thumb-size must be >= 16, got {args.thumb_size}')
    return args


def main(argv: Optional[List[str]] = None) -> int:
    """Run the tool; returns the exit status."""
    args = parse_args(argv)
    from wsss_mmseg.report import ReportArgumentError, write_report
    try:
        index = write_report(args.work_dir, args.out, gallery_size=args.gallery_size,
                             num_bins=args.bins, thumb_size=args.thumb_size, logger=print)
    except ReportArgumentError as exc:
        print(f'report.py: error: {exc}', file=sys.stderr)
        return EXIT_BAD_ARGUMENTS
    print(f'open {index.resolve().as_uri()}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
