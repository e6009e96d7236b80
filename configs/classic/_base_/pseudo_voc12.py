# Pseudo-label job of the classic configs: tools/generate_pseudo.py reads pseudo_dataset,
# generator (set in each config: ClassifierCAMGenerator on the trained checkpoint) and mask_maker.
# data_root: the same root as _base_/voc12_trainaug.py (WSSS_VOC_ROOT=/path/VOC2012 moves both)
pseudo_dataset = dict(type='VOCImageLabels', data_root='{{$WSSS_VOC_ROOT:data/VOCdevkit/VOC2012}}',
                      split='ImageSets/Segmentation/train_aug.txt', img_dir='JPEGImages',
                      labels=None, gt_dir='SegmentationClassAug', class_table='voc20')
# background score (1 - max_k cam_k) ** bg_power, then the dense CRF (corrected, not the
# CLIP-ES quirks); confidence = max posterior, used by CGLLoss at training time.
mask_maker = dict(type='PseudoMaskMaker', bg_power=1,
                  crf=dict(type='DenseCRF', fidelity=False), ignore_below=None)
pseudo_job = dict(save_cams=False, evaluate=True, eval_conf_thresholds=[0.95], log_interval=50)
