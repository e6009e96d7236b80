"""Support of ``bench_generate.py``: data sets in temp folders, weights, memory sampling, machine.

Not a benchmark by itself; imported by ``bench_generate.py`` (same folder).
"""
from __future__ import annotations

import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    # measure this checkout's code (a worktree or clone), not whichever copy is pip-installed;
    # the job children (bench_generate.py --child) import this module first too
    sys.path.insert(1, str(REPO))
#: The project's read-only inputs (``../shared`` next to the checkout; this machine's copy otherwise).
SHARED = next((p for p in (REPO.parent / 'shared', Path('/work/shared')) if (p / 'data').is_dir()),
              REPO.parent / 'shared')
VOC_SAMPLE = SHARED / 'data' / 'voc_sample'
MAKE_WEIGHTS = SHARED / 'data' / 'clip_es_golden' / 'make_weights.py'


# ------------------------------------------------------------------ data sets (temp folders)
def voc_ids(voc_root: Path) -> List[str]:
    """Image ids of the VOC sample's split."""
    return (voc_root / 'ImageSets/Segmentation/val.txt').read_text().split()


def voc_labels(voc_root: Path) -> Dict[str, List[int]]:
    """``{id: [class indices]}`` of the VOC sample."""
    return json.loads((voc_root / 'cls_labels.json').read_text())['labels']


def make_dataset(root: Path, images: Sequence[Path], labels: Sequence[Sequence[int]]) -> Dict[str, Any]:
    """A VOC-layout folder of symlinks to ``images`` (unique ids) and its ``pseudo_dataset`` section.

    Args:
        root: Empty folder to fill.
        images: Image files (may repeat: each entry gets its own id).
        labels: Class indices per entry.

    Returns:
        The ``VOCImageLabels`` config section.
    """
    img_dir = root / 'JPEGImages'
    img_dir.mkdir(parents=True, exist_ok=True)
    ids, table = [], {}
    for n, (path, labs) in enumerate(zip(images, labels)):
        image_id = f'{n:05d}_{Path(path).stem}'
        os.symlink(os.path.abspath(path), img_dir / f'{image_id}.jpg')
        ids.append(image_id)
        table[image_id] = [int(x) for x in labs]
    (root / 'split.txt').write_text('\n'.join(ids) + '\n')
    (root / 'labels.json').write_text(json.dumps(dict(labels=table)))
    return dict(type='VOCImageLabels', data_root=str(root), split=str(root / 'split.txt'), img_dir='JPEGImages',
                labels=str(root / 'labels.json'), gt_dir=None, class_table='voc20')


def voc_subset(voc_root: Path, n: int, root: Path) -> Dict[str, Any]:
    """The first ``n`` VOC sample images (the list repeated when ``n`` exceeds it)."""
    ids, table = voc_ids(voc_root), voc_labels(voc_root)
    chosen = [ids[i % len(ids)] for i in range(n)]
    return make_dataset(root, [voc_root / 'JPEGImages' / f'{i}.jpg' for i in chosen], [table[i] for i in chosen])


def big_photo(voc_root: Path, root: Path, hw=(4000, 6000)) -> Dict[str, Any]:
    """Two datasets: a VOC photo upscaled (bicubic) to ``hw`` and the original, 3 labels each.

    The photo is the first 500x375 one of the sample (else the first image).
    """
    from PIL import Image
    ids, table = voc_ids(voc_root), voc_labels(voc_root)
    paths = [voc_root / 'JPEGImages' / f'{i}.jpg' for i in ids]
    src = next((p for p in paths if Image.open(p).size == (500, 375)), paths[0])
    root.mkdir(parents=True, exist_ok=True)
    big = root / f'photo_{hw[1]}x{hw[0]}.jpg'
    if not big.exists():
        Image.open(src).convert('RGB').resize((hw[1], hw[0]), Image.BICUBIC).save(big, quality=90)
    labs = (list(table[src.stem]) + [c for c in (14, 8, 11) if c not in table[src.stem]])[:3]
    return dict(big=make_dataset(root / 'big', [big], [labs]), small=make_dataset(root / 'small', [src], [labs]))


# ------------------------------------------------------------------ weights
def vitb16_weights(args) -> Dict[str, Any]:
    """``clip=dict(...)`` of the ViT-B/16-size model (module docstring); the tiny one with ``--generator tiny``."""
    if args.generator == 'tiny':
        return tiny_weights(args)
    if args.pretrained:
        return dict(model_name='ViT-B-16', pretrained=args.pretrained)
    path = Path(args.cache_dir) / 'clip_random_vitb16_seed0.pt'
    if not path.exists() and MAKE_WEIGHTS.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run([sys.executable, str(MAKE_WEIGHTS), '--variant', 'vitb16', '--seed', '0',
                        '--out', str(path)], check=True, capture_output=True)
    if path.exists():
        return dict(model_name='ViT-B-16', pretrained=str(path))
    return dict(model_name='ViT-B-16', pretrained=None)  # open_clip's deterministic random init


def tiny_weights(args) -> Dict[str, Any]:
    """``clip=dict(...)`` of the tiny CLIP (written once into ``--cache-dir``)."""
    path = Path(args.cache_dir) / 'clip_tiny_vit_seed0.pt'
    if not path.exists():
        from wsss_mmseg.clip import save_openai_format, tiny_clip
        save_openai_format(tiny_clip(seed=0, fp16_round=True), str(path))
    return dict(model_name=None, pretrained=str(path))


# ------------------------------------------------------------------ memory of a process tree
def _peak_rss() -> Dict[str, float]:
    return dict(rss_self_mib=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                rss_children_mib=resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024)


def _tree_pids(root: int) -> List[int]:
    """``root`` and its descendants (from ``/proc/*/stat``)."""
    parent: Dict[int, int] = {}
    for d in os.listdir('/proc'):
        if d.isdigit():
            try:
                stat = Path(f'/proc/{d}/stat').read_text()
            except OSError:
                continue
            parent[int(d)] = int(stat.rsplit(')', 1)[1].split()[1])
    tree, grew = {root}, True
    while grew:
        new = {p for p, pp in parent.items() if pp in tree and p not in tree}
        tree |= new
        grew = bool(new)
    return sorted(tree)


class TreeMemorySampler:
    """Peak of the summed PSS (proportional set size: shared pages split between the processes
    sharing them) of this process and its children, sampled every ``interval`` s (Linux).

    Args:
        interval: Seconds between samples.
    """

    def __init__(self, interval: float = 0.5) -> None:
        import threading
        self.interval = interval
        self.peak_pss_mib: Optional[float] = None
        self.peak_processes = 0
        self.samples = 0
        self.child_hwm_mib: Dict[int, float] = {}  # VmHWM (exact peak RSS) of each child, by pid
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _sample(self) -> None:
        total, n = 0, 0
        for pid in _tree_pids(os.getpid()):
            try:
                text = Path(f'/proc/{pid}/smaps_rollup').read_text()
                if pid != os.getpid():
                    status = Path(f'/proc/{pid}/status').read_text()
                    hwm = next(int(ln.split()[1]) for ln in status.splitlines() if ln.startswith('VmHWM:'))
                    self.child_hwm_mib[pid] = max(self.child_hwm_mib.get(pid, 0.0), hwm / 1024)
            except (OSError, StopIteration):
                continue
            total += next(int(ln.split()[1]) for ln in text.splitlines() if ln.startswith('Pss:'))
            n += 1
        if self.peak_pss_mib is None or total / 1024 > self.peak_pss_mib:
            self.peak_pss_mib = total / 1024
        self.peak_processes = max(self.peak_processes, n)
        self.samples += 1

    def _run(self) -> None:
        while not self._stop.is_set():
            self._sample()
            self._stop.wait(self.interval)

    def __enter__(self) -> 'TreeMemorySampler':
        if Path('/proc/self/smaps_rollup').exists():
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()


def machine() -> Dict[str, Any]:
    """What the figures were measured on."""
    import torch
    cpu = next((ln.split(':', 1)[1].strip() for ln in Path('/proc/cpuinfo').read_text().splitlines()
                if ln.startswith('model name')), platform.processor()) if Path('/proc/cpuinfo').exists() else '?'
    return dict(cpu=cpu, cores=os.cpu_count(), python=platform.python_version(), torch=torch.__version__,
                cuda=torch.cuda.is_available(), load_avg=os.getloadavg(),
                date=time.strftime('%Y-%m-%d %H:%M %Z'))
