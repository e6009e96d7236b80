"""A 2-process gloo run partitions the images exactly: every image generated once."""
import json
import socket
import subprocess
import sys
from collections import Counter
from pathlib import Path

import hashlib
import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
import rel_common as rc  # noqa: E402
import pseudo_fakes as pf  # noqa: E402


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def test_two_process_gloo_run_generates_every_image_exactly_once(tmp_path):
    n = 11
    ds = pf.folder_dataset(tmp_path / 'data', n=n)
    cfg = tmp_path / 'cfg.py'
    pf.write_config(cfg, dataset=ds)
    text = cfg.read_text().replace("imports=['pseudo_fakes']", "imports=['pseudo_fakes', 'rel_fakes']")
    cfg.write_text(text.replace(f"type='{pf.FAKE_GENERATOR}'", "type='WsssTestRecordingGenerator'"))
    record = tmp_path / 'calls'
    record.mkdir()
    work = tmp_path / 'dist'
    out = subprocess.run(
        [sys.executable, '-m', 'torch.distributed.run', '--nproc_per_node=2',
         f'--master_port={_free_port()}', str(rc.TOOL), str(cfg), '--work-dir', str(work),
         '--launcher', 'pytorch'],
        cwd=rc.REPO, env=rc.sub_env(WSSS_TEST_RECORD_DIR=str(record)), capture_output=True,
        text=True, timeout=180)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    per_process = [p.read_text().split() for p in sorted(record.glob('calls.*'))]
    assert len(per_process) == 2 and sorted(map(len, per_process)) == [5, 6]
    expected = []
    for name in sorted(json.loads(Path(ds['labels']).read_text())):
        with Image.open(Path(ds['img_dir']) / name) as im:
            expected.append(hashlib.sha1(np.asarray(im.convert('RGB')).tobytes()).hexdigest())
    calls = Counter(h for proc in per_process for h in proc)
    assert calls == Counter(expected)  # every image once, none twice, none missing
    assert not set(per_process[0]) & set(per_process[1])
    summary = json.loads((work / 'summary.json').read_text())
    assert summary['counts'] == dict(total=n, done=n, processed=n, skipped_resumed=0, failed=0, evaluation_failed=0)
    assert sorted(k for k in pf.tree_bytes(work)) == sorted(
        f'{sub}/img{i:02d}.png' for sub in ('masks', 'confidence') for i in range(n))
    # the lock was held by rank 0 only and is released
    from wsss_mmseg.pseudo.job import acquire_work_dir_lock
    acquire_work_dir_lock(work).close()
