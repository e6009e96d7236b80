# Adversarial erasing (AE-PSL, Wei et al. 2017): 3 rounds of classifier training, each on the
# images with the regions mined so far (CAM > 0.5 of each labelled class) erased with the mean.
#   python tools/adversarial_erasing.py configs/classic/ae_r50_voc.py
#       -> work_dirs/ae_r50_voc/round_{0,1,2}/ (checkpoint, erase/, ae_r50_voc.py) + rounds.json
#   python tools/generate_pseudo.py configs/classic/ae_r50_voc.py
#       -> pseudo labels from the max of the rounds' CAMs; the checkpoints come from rounds.json
#          (relative paths resolved against its folder). After the rounds ran with
#          --work-dir DIR: --cfg-options generator.rounds=DIR/rounds.json
# The threshold is not from the paper's code (none published); tune it on val.
_base_ = ['./cam_r50_voc.py']
work_dir = 'work_dirs/ae_r50_voc'
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='EraseRegions', erase_dir=None, fill=(103.53, 116.28, 123.675)),  # set per round
    dict(type='RandomResize', scale=(512, 512), ratio_range=(0.625, 1.25), keep_ratio=True),
    dict(type='RandomCrop', crop_size=(512, 512)),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PhotoMetricDistortion'),
    dict(type='PackMultiLabelInputs'),
]
train_dataloader = dict(dataset=dict(pipeline=train_pipeline))
adversarial_erasing = dict(
    rounds=3, threshold=0.5,
    mining=dict(method='cam', scales=(1.0,), flip=True, fill=(103.53, 116.28, 123.675)))
generator = dict(
    _delete_=True,
    type='AdversarialErasingCAMGenerator',
    rounds=work_dir + '/rounds.json',  # written by tools/adversarial_erasing.py
    config='{{fileDirname}}/ae_r50_voc.py',  # the classifier = this config's model
    merge='max',  # pixel-wise max of the rounds' normalised CAMs
    method='cam', scales=(1.0, 0.5, 1.5, 2.0), flip=True, max_side=None, caa=None,
    class_table='voc20', device='auto')
