# AffinityNet random walk on CLIP-ES maps: the CLIP-ES generator of configs/clip_es_voc.py (its
# CAA-refined maps) wrapped by RandomWalkGenerator. Train the AffinityNet on CLIP-ES CAMs:
#   python tools/generate_pseudo.py configs/clip_es_voc.py --save-cams      # CLIP cues
#   mim train mmsegmentation configs/classic/affinitynet_r50_voc.py \
#       --cfg-options train_dataloader.dataset.pipeline.1.cam_dir=work_dirs/clip_es_voc/pseudo/cams
#   python tools/generate_pseudo.py configs/classic/affinitynet_clip_es_voc.py
_base_ = ['../clip_es_voc.py']
custom_imports = dict(imports=['wsss_mmseg', 'wsss_mmseg.models'], allow_failed_imports=False)
generator = dict(
    _delete_=True,
    type='RandomWalkGenerator',
    base={{_base_.generator}},
    affinity_net=dict(config='{{fileDirname}}/affinitynet_r50_voc.py',
                      checkpoint='work_dirs/affinitynet_r50_voc/iter_8000.pth'),
    random_walk=dict(type='RandomWalk', beta=10.0, steps=256, radius=5, bg_threshold=0.25),
    device='auto')
