"""Evaluation of pseudo masks (mIoU, precision/recall, ignored share, reports)."""
from ..pseudo.evaluate import (PseudoMaskEvaluator, confusion_matrix, evaluate_pseudo_dir,
                          format_markdown, plot_iou_bars, scores_from_confusion,
                          write_eval_reports)

__all__ = ['PseudoMaskEvaluator', 'confusion_matrix', 'evaluate_pseudo_dir',
           'format_markdown', 'plot_iou_bars', 'scores_from_confusion',
           'write_eval_reports']
