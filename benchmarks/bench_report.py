"""Printing of ``bench_generate.py`` results (what each part measured, the targets, the ceilings)."""
from __future__ import annotations

from typing import Mapping, Optional

STAGES = ('wait_loader', 'decode', 'model', 'mask_crf', 'encode_write', 'wait_writer')
MODEL_SPLIT = ('trunk', 'last_block_grad', 'cam', 'caa')
MEMORY_VARIANTS = ('defaults', 'overlapped')  # inline; 1 loading + 1 post-processing worker


def _mib(x: Optional[float]) -> str:
    return 'n/a' if x is None else f'{x:.0f} MiB'


def _clip_name(clip: Mapping) -> str:
    return 'tiny CLIP' if clip.get('model_name') is None else f"{clip['model_name']} ({clip.get('pretrained')})"


def _stages_line(r: Mapping) -> str:
    st, ms = r['stage_s'], r['model_split_s']
    return ('  '.join(f'{k} {st[k]:.2f}' for k in STAGES) + '  | model = '
            + ' + '.join(f'{k} {ms[k]:.2f}' for k in MODEL_SPLIT))


def print_report(res: Mapping) -> None:
    m = res['machine']
    print(f"\n== {m['date']}: {m['cores']} cores ({m['cpu']}), torch {m['torch']}, load {m['load_avg']}")
    if 'job' in res:
        j = res['job']
        print(f"\n[job] {j['images']} VOC images, {_clip_name(j['clip'])}, CRF on (best of runs)")
        for v, r in j['best'].items():
            print(f"  {v:10s} {r['images_per_s']:.3f} img/s  loop {r['loop_wall_s']:.1f} s  threads "
                  f"{r['torch_threads']}  load {r['load_avg_start'][0]:.1f}->{r['load_avg_end'][0]:.1f}  "
                  f"peak PSS {_mib(r['peak_tree_pss_mib'])} ({r['peak_processes']} processes)")
            print('    seconds: ' + _stages_line(r))
        for v, ratio in j['ratio_vs_serial'].items():
            print(f"  ratio {v}/serial: {ratio:.2f}x (target >= 1.5x)")
        if 'overlap_ceiling' in j:
            oc = j['overlap_ceiling']
            print(f"  ceiling on {res['machine']['cores']} cores: serial work = model {oc['model_core_s']:.1f} + other "
                  f"{oc['other_core_s']:.1f} core-s ({oc['work_from']}); with every core busy all the time {oc['best_wall_s']:.1f} s "
                  f"instead of {oc['serial_stage_wall_s']:.1f} s -> at most {oc['max_speedup']:.2f}x for any "
                  'overlap/sharding of the same work')
    if 'cam' in res:
        c = res['cam']
        print(f"\n[cam] CAM + CAA, {c['images']} VOC images ({c['tokens_min']}-{c['tokens_max']} patches, "
              f"{c['labels_mean']:.2f} labels avg), {c['threads']} threads")
        for mode, s in c['s_per_image'].items():
            print(f'  {mode:10s} {s:.3f} s/image  {1 / s:.3f} img/s')
        print('  batched split s/image: ' + ', '.join(f'{k} {v:.3f}' for k, v in c['batched_split_s_per_image'].items()))
        for mode, ratio in c.get('speedup_vs_official', {}).items():
            print(f'  speed-up {mode} vs official: {ratio:.2f}x (target >= 1.5x)')
        for mode, ratio in c['ratio_batched_vs'].items():
            if mode == 'official':
                continue
            print(f'  speed-up batched vs {mode}: {ratio:.2f}x')
        print('  reference vs batched max |diff| (first image): '
              + ', '.join(f'{k} {v:.1e}' for k, v in c['reference_max_abs_diff'].items()))
        rf = c['roofline']
        print(f"  roofline: trunk {rf['trunk_gflop']:.0f} GFLOP/image ({rf['tokens']} tokens); fp32 GEMM at that shape "
              f"{rf['gemm_gflops']:.0f} GFLOP/s ({rf['threads']} threads)"
              + (f"; the trunk ran at {rf['trunk_gflops']:.0f} GFLOP/s = {100 * rf['trunk_fraction_of_gemm']:.0f} % "
                 'of it' if 'trunk_gflops' in rf else ''))
    for part, label in (('rss', 'images'), ('bigphoto', 'photo')):
        if part in res:
            p = res[part]
            print(f"\n[{part}] peak memory, {p['clip']}, CRF {'on' if p['crf'] else 'off'}")
            for v in MEMORY_VARIANTS:
                print(f'  {v}:')
                for n, r in p[v]['runs'].items():
                    print(f"    {label} {n:6s} tree PSS {_mib(r['peak_tree_pss_mib'])}, main RSS "
                          f"{r['rss_self_mib']:.0f} MiB, largest child RSS {r['rss_children_mib']:.0f} MiB, "
                          f"{r['images']} done, {r['loop_wall_s']:.1f} s")
                    if r.get('child_peak_rss_mib'):
                        print('      children peak RSS (start order): '
                              + ', '.join(f'{x:.0f}' for x in r['child_peak_rss_mib']) + ' MiB')
                print('    ratios: ' + ', '.join(f'{k} {x:.3f}' if x else f'{k} n/a'
                                             for k, x in p[v]['ratios'].items()))
    if 'autocast' in res:
        a = res['autocast']
        print(f"\n[autocast] {a['images']} VOC images on {a['device']} ({a['threads']} threads), CRF on, vs fp32 "
              f"({a['fp32_generate_s']:.1f} s)")
        for m in ('bf16', 'fp16'):
            if m in a:
                r = a[m]
                print(f"  {m}: pseudo-mask pixel agreement {100 * r['mask_pixel_agreement']:.2f} %, max |diff| "
                      f"cam_refined {r['max_abs_diff_cam_refined']:.3f}, generate {r['generate_s']:.1f} s "
                      f"({r['speed_vs_fp32']:.2f}x fp32)")
    if 'startup' in res:
        s = res['startup']
        print(f"\n[startup] 1 image, {_clip_name(s['clip'])}, CRF on")
        for n, r in s['runs'].items():
            print(f"  {n:13s} first image written after {r['process_s']:.1f} s (imports {r['import_s']:.1f}, "
                  f"generator build {r.get('generator_build_s', 0):.1f}, first CAM at {r.get('first_image_s', 0):.1f})")
        print(f"  text features cached on disk: {'yes' if s['text_features_cached'] else 'NO'}")
