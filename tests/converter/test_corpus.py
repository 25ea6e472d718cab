"""Every prototxt of the shared corpus either converts or is refused up front, as this table
says; the small real caffemodels convert with their real weights and agree across runtimes.

The table may only move files from a refused state to CONVERT: a refused file that starts
loading fails the test until the table is updated (so progress is recorded, never lost).
The numerics of every converting row (PyTorch reference vs ONNX Runtime vs OpenCV on seeded
weights) and of the small real caffemodels are in tests/converter/test_corpus_numerics.py.
"""
from __future__ import annotations

import csv
from pathlib import Path

import pytest

from protogen.caffe.loader import load_model
from protogen.errors import ProtogenError, UnsupportedError

from tests.helpers import CORPUS  # noqa: E402
from tests.helpers import needs_corpus  # noqa: E402
pytestmark = needs_corpus

CONVERT = "convert"            # loads, every shape infers
REFUSE = "refuse"              # UnsupportedError listing every unsupported type/field/parameter
REFUSE_PARSE = "refuse-parse"  # text Caffe's own parser rejects too (malformed for everyone)
REFUSE_OTHER = "refuse-other"  # another one-line ProtogenError (shape rule, missing value, ...)
# a string "N,C,H,W": converts given that input shape (data layer without crop_size, or an
# input_dim of 1x1 that the net's own tools resize at run time); given(...): converts with these
# load_model options; (REFUSE*, "text"): refused, the error says "text" (what stops the net)


def given(**options) -> dict:
    """Converts when loaded with these load_model options (input_shape, phase, stages)."""
    return dict(options)


def refused(kind: str, why: str, **options) -> tuple:
    """Refused even with these options (the train view of a detector, ...)."""
    return (kind, why, options)


# Why the refused ones stop (the table may only shrink: a refused file that starts loading
# fails test_corpus_prototxt until its row says how it converts):
# * files Caffe's own parser rejects (a V1 block with a string type, a net name given twice)
#   and DIGITS templates (no num_output until DIGITS fills it in): malformed for everyone;
# * ENet's training net: its Python SpatialDropout is fixed to the TRAIN phase in the file, so it
#   is random even at test time (no deterministic inference meaning).
EXPECTED = {
    "antingshen_resnet-protofiles/ResNet_18_train_val.prototxt": CONVERT,
    "antingshen_resnet-protofiles/ResNet_34_train_val.prototxt": CONVERT,
    "antingshen_resnet-protofiles/ResNet_50_deploy.prototxt": CONVERT,
    "antingshen_resnet-protofiles/ResNet_50_train_val.prototxt": CONVERT,
    "bvlc_caffe/branch_intel/examples/LRCN_activity_recognition/deploy_lstm.prototxt": CONVERT,
    "bvlc_caffe/branch_intel/examples/LRCN_activity_recognition/train_test_lstm_RGB.prototxt": given(
        stages=("test-on-test",), input_shape={"data": "48,3,227,227", "clip_markers": "48,1,1,1"}),
    "bvlc_caffe/branch_intel/models/intel_optimized_models/VNet/test_noPooling_ResNet_cinque.prototxt": CONVERT,
    "bvlc_caffe/branch_intel/models/intel_optimized_models/benchmark/faster-rcnn/deploy.prototxt": CONVERT,
    "bvlc_caffe/branch_intel/models/intel_optimized_models/benchmark/googlenet_v2/deploy.prototxt": CONVERT,
    "bvlc_caffe/branch_intel/models/intel_optimized_models/benchmark/googlenet_v3/deploy.prototxt": CONVERT,
    "bvlc_caffe/branch_intel/models/intel_optimized_models/benchmark/googlenet_v3/train_val_dummydata.prototxt": CONVERT,
    "bvlc_caffe/branch_intel/models/intel_optimized_models/benchmark/resnet_50/train_val_dummydata.prototxt": CONVERT,
    "bvlc_caffe/branch_intel/models/intel_optimized_models/benchmark/resnext_50/deploy.prototxt": CONVERT,
    "bvlc_caffe/branch_intel/models/intel_optimized_models/benchmark/ssd/deploy.prototxt": CONVERT,
    "bvlc_caffe/branch_intel/models/intel_optimized_models/benchmark/vgg16/deploy.prototxt": CONVERT,
    "bvlc_caffe/branch_intel/models/intel_optimized_models/benchmark/yolo/deploy.prototxt": CONVERT,
    "bvlc_caffe/branch_intel/models/intel_optimized_models/dcgan/discriminator.prototxt": CONVERT,
    "bvlc_caffe/branch_intel/models/intel_optimized_models/dcgan/generator.prototxt": CONVERT,
    "bvlc_caffe/branch_intel/models/intel_optimized_models/int8/mobilenet_v1_int8_perf.prototxt": CONVERT,
    "bvlc_caffe/branch_intel/models/intel_optimized_models/multinode/googlenet_v3_aux_32nodes_2k_batch/train_val.prototxt": CONVERT,
    "bvlc_caffe/branch_opencl/models/inference_optimize/AlexNet-merged-1.prototxt": CONVERT,
    "bvlc_caffe/current/examples/cifar10/cifar10_full.prototxt": CONVERT,
    "bvlc_caffe/current/examples/cifar10/cifar10_full_sigmoid_train_test_bn.prototxt": "1,3,32,32",
    "bvlc_caffe/current/examples/cifar10/cifar10_full_train_test.prototxt": "1,3,32,32",
    "bvlc_caffe/current/examples/cifar10/cifar10_quick.prototxt": CONVERT,
    "bvlc_caffe/current/examples/cifar10/cifar10_quick_train_test.prototxt": "1,3,32,32",
    "bvlc_caffe/current/examples/feature_extraction/imagenet_val.prototxt": CONVERT,
    "bvlc_caffe/current/examples/finetune_pascal_detection/pascal_finetune_trainval_test.prototxt": CONVERT,
    "bvlc_caffe/current/examples/hdf5_classification/nonlinear_train_val.prototxt": given(input_shape="1,4"),
    "bvlc_caffe/current/examples/mnist/lenet.prototxt": CONVERT,
    "bvlc_caffe/current/examples/mnist/lenet_train_test.prototxt": "1,1,28,28",
    "bvlc_caffe/current/examples/mnist/mnist_autoencoder.prototxt": given(input_shape="1,1,28,28", stages=("test-on-test",)),
    "bvlc_caffe/current/examples/net_surgery/bvlc_caffenet_full_conv.prototxt": CONVERT,
    "bvlc_caffe/current/examples/net_surgery/conv.prototxt": CONVERT,
    "bvlc_caffe/current/examples/pycaffe/linreg.prototxt": CONVERT,   # its Python layer is a loss (loss_weight: 1): dropped
    "bvlc_caffe/current/examples/siamese/mnist_siamese.prototxt": CONVERT,
    "bvlc_caffe/current/examples/siamese/mnist_siamese_train_test.prototxt": given(input_shape="1,2,28,28"),
    "bvlc_caffe/current/models/bvlc_alexnet/deploy.prototxt": CONVERT,
    "bvlc_caffe/current/models/bvlc_alexnet/train_val.prototxt": CONVERT,
    "bvlc_caffe/current/models/bvlc_googlenet/deploy.prototxt": CONVERT,
    "bvlc_caffe/current/models/bvlc_googlenet/train_val.prototxt": CONVERT,
    "bvlc_caffe/current/models/bvlc_reference_caffenet/deploy.prototxt": CONVERT,
    "bvlc_caffe/current/models/bvlc_reference_caffenet/train_val.prototxt": CONVERT,
    "bvlc_caffe/current/models/bvlc_reference_rcnn_ilsvrc13/deploy.prototxt": CONVERT,
    "bvlc_caffe/current/models/finetune_flickr_style/deploy.prototxt": CONVERT,
    "bvlc_caffe/current/models/finetune_flickr_style/train_val.prototxt": CONVERT,
    "bvlc_caffe/history_0d9a78f5a_v2_input_shape/examples/mnist/lenet.prototxt": CONVERT,
    "bvlc_caffe/history_0d9a78f5a_v2_input_shape/examples/siamese/mnist_siamese.prototxt": CONVERT,
    "bvlc_caffe/history_0d9a78f5a_v2_input_shape/models/bvlc_googlenet/deploy.prototxt": CONVERT,
    "bvlc_caffe/history_0d9a78f5a_v2_input_shape/models/bvlc_reference_caffenet/deploy.prototxt": CONVERT,
    "bvlc_caffe/history_11a4c1655_v1/examples/cifar10/cifar10_full_train_test.prototxt": "1,3,32,32",
    "bvlc_caffe/history_11a4c1655_v1/examples/finetune_pascal_detection/pascal_finetune_trainval_test.prototxt": CONVERT,
    "bvlc_caffe/history_11a4c1655_v1/examples/hdf5_classification/train_val2.prototxt": given(input_shape="1,4"),
    "bvlc_caffe/history_11a4c1655_v1/examples/imagenet/bvlc_caffenet_full_conv.prototxt": CONVERT,
    "bvlc_caffe/history_11a4c1655_v1/examples/mnist/lenet.prototxt": CONVERT,
    "bvlc_caffe/history_11a4c1655_v1/examples/mnist/lenet_train_test.prototxt": "1,1,28,28",
    "bvlc_caffe/history_11a4c1655_v1/examples/mnist/mnist_autoencoder.prototxt": given(input_shape="1,1,28,28", stages=("test-on-test",)),
    "bvlc_caffe/history_11a4c1655_v1/examples/siamese/mnist_siamese_train_test.prototxt": given(input_shape="1,2,28,28"),
    "bvlc_caffe/history_11a4c1655_v1/models/bvlc_alexnet/deploy.prototxt": CONVERT,
    "bvlc_caffe/history_11a4c1655_v1/models/bvlc_alexnet/train_val.prototxt": CONVERT,
    "bvlc_caffe/history_11a4c1655_v1/models/bvlc_googlenet/deploy.prototxt": CONVERT,
    "bvlc_caffe/history_11a4c1655_v1/models/bvlc_googlenet/train_val.prototxt": CONVERT,
    "bvlc_caffe/history_11a4c1655_v1/models/bvlc_reference_caffenet/deploy.prototxt": CONVERT,
    "bvlc_caffe/history_11a4c1655_v1/models/bvlc_reference_caffenet/train_val.prototxt": CONVERT,
    "bvlc_caffe/history_11a4c1655_v1/models/finetune_flickr_style/train_val.prototxt": CONVERT,
    "bvlc_caffe/history_2e330581c_v0/examples/cifar10/cifar10_full_train.prototxt": "1,3,32,32",
    "bvlc_caffe/history_2e330581c_v0/examples/cifar10/cifar10_quick.prototxt": CONVERT,
    "bvlc_caffe/history_2e330581c_v0/examples/feature_extraction/imagenet_val.prototxt": CONVERT,
    "bvlc_caffe/history_2e330581c_v0/examples/imagenet/imagenet_deploy.prototxt": CONVERT,
    "bvlc_caffe/history_2e330581c_v0/examples/imagenet/imagenet_train.prototxt": CONVERT,
    "bvlc_caffe/history_2e330581c_v0/examples/lenet/lenet.prototxt": CONVERT,
    "bvlc_caffe/history_2e330581c_v0/examples/pascal-finetuning/pascal_finetune_train.prototxt": CONVERT,
    "bvlc_caffe/history_4b273e35c_v0_padding/examples/imagenet/imagenet_val.prototxt": CONVERT,
    "bvlc_caffe/history_4b273e35c_v0_padding/examples/lenet/lenet_train.prototxt": "1,1,28,28",
    "bvlc_caffe/history_4b273e35c_v0_padding/models/imagenet.prototxt": CONVERT,
    "bvlc_caffe/history_833b334b5_v2_input_dim/examples/cifar10/cifar10_quick.prototxt": CONVERT,
    "bvlc_caffe/history_833b334b5_v2_input_dim/examples/mnist/lenet.prototxt": CONVERT,
    "bvlc_caffe/history_833b334b5_v2_input_dim/examples/net_surgery/conv.prototxt": CONVERT,
    "bvlc_caffe/history_833b334b5_v2_input_dim/models/bvlc_alexnet/deploy.prototxt": CONVERT,
    "bvlc_caffe/history_833b334b5_v2_input_dim/models/bvlc_googlenet/deploy.prototxt": CONVERT,
    "chuanqi305_mobilenet-ssd/deploy.prototxt": CONVERT,
    "chuanqi305_mobilenet-ssd/voc/MobileNetSSD_deploy.prototxt": CONVERT,
    "chuanqi305_mobilenet-ssd/voc/MobileNetSSD_test.prototxt": CONVERT,
    "chuanqi305_mobilenet-ssd/voc/MobileNetSSD_train.prototxt": given(phase="train"),
    "cmu_openpose/models/face/pose_deploy.prototxt": "1,3,368,368",
    "cmu_openpose/models/hand/pose_deploy.prototxt": "1,3,368,368",
    "cmu_openpose/models/pose/body_25/pose_deploy.prototxt": CONVERT,
    "cmu_openpose/models/pose/coco/pose_deploy_linevec.prototxt": "1,3,368,368",
    "cvjena_cnn-models/AlexNet_cvgj/deploy.prototxt": CONVERT,
    "cvjena_cnn-models/ResNet_preact/ResNet10_cvgj/train.prototxt": CONVERT,
    "cvjena_cnn-models/ResNet_preact/ResNet50_cvgj/deploy.prototxt": CONVERT,
    "cvjena_cnn-models/VGG19_cvgj/deploy.prototxt": CONVERT,
    "cvjena_cnn-models/VGG19_cvgj/train.prototxt": CONVERT,
    "deepscale_squeezenet/SqueezeNet_v1.0/deploy.prototxt": CONVERT,
    "deepscale_squeezenet/SqueezeNet_v1.0/train_val.prototxt": CONVERT,
    "deepscale_squeezenet/SqueezeNet_v1.1/deploy.prototxt": CONVERT,
    "deepscale_squeezenet/SqueezeNet_v1.1/train_val.prototxt": CONVERT,
    "everpeace_caffe/examples/cifar10/cifar10_quick.prototxt": CONVERT,
    "everpeace_caffe/examples/mnist/lenet.prototxt": CONVERT,
    "facebookarchive_c3d/c3d_sport1m_feature_extractor_frm.prototxt": CONVERT,
    "facebookarchive_c3d/c3d_ucf101_finetuning_test.prototxt": CONVERT,
    "facebookarchive_c3d/conv3d_ucf101_train.prototxt": CONVERT,
    "gillevi_agegender/age_net_definitions/deploy.prototxt": CONVERT,
    "gillevi_agegender/age_net_definitions/train_val_test_fold_is_0.prototxt": CONVERT,
    "gillevi_agegender/gender_net_definitions/deploy.prototxt": CONVERT,
    "hszhao_pspnet/pspnet101_VOC2012_473.prototxt": CONVERT,
    "hszhao_pspnet/pspnet50_ADE20K_473.prototxt": CONVERT,
    "kaiminghe_deep-residual-networks/ResNet-101-deploy.prototxt": CONVERT,
    "kaiminghe_deep-residual-networks/ResNet-152-deploy.prototxt": CONVERT,
    "kaiminghe_deep-residual-networks/ResNet-50-deploy.prototxt": CONVERT,
    "kpzhang93_mtcnn/det1.prototxt": CONVERT,
    "kpzhang93_mtcnn/det2.prototxt": CONVERT,
    "kpzhang93_mtcnn/det3.prototxt": CONVERT,
    "kpzhang93_mtcnn/det4.prototxt": CONVERT,
    "lim0606_caffe-googlenet-bn/deploy.prototxt": (REFUSE_PARSE, 'has no value named "Softmax"'),
    "linzaer_ultra-light-face/RFB-320.prototxt": CONVERT,
    "linzaer_ultra-light-face/slim-320.prototxt": CONVERT,
    "nvidia_digits/alexnet.prototxt": (REFUSE_OTHER, "inner_product_param needs num_output"),
    "nvidia_digits/lenet.prototxt": (REFUSE_OTHER, "inner_product_param needs num_output"),
    "rbgirshick_fast-rcnn/models/CaffeNet/test.prototxt": CONVERT,
    "rbgirshick_fast-rcnn/models/VGG16/train.prototxt": given(input_shape={"data": "1,3,224,224", "rois": "1,5"}, phase="train"),
    "rbgirshick_fast-rcnn/models/VGG_CNN_M_1024/compressed/test.prototxt": CONVERT,
    "rbgirshick_rcnn/finetuning/voc_2007_prototxt/pascal_finetune_train.prototxt": CONVERT,
    "rbgirshick_rcnn/model-defs/pascal_finetune_deploy.prototxt": CONVERT,
    "rbgirshick_rcnn/model-defs/rcnn_batch_256_output_fc7.prototxt": CONVERT,
    "rbgirshick_rcnn/model-defs/rcnn_batch_256_output_pool5.prototxt": CONVERT,
    "s9xie_hed/deploy.prototxt": CONVERT,
    "s9xie_hed/train_val.prototxt": "1,3,500,500",
    "shelhamer_fcn/nyud-fcn32s-color-hha/trainval.prototxt": given(input_shape={"color": "1,3,425,560", "hha": "1,3,425,560"}),
    "shelhamer_fcn/voc-fcn-alexnet/val.prototxt": given(input_shape="1,3,500,500"),
    "shelhamer_fcn/voc-fcn8s/deploy.prototxt": CONVERT,
    "shelhamer_fcn/voc-fcn8s/train.prototxt": given(input_shape="1,3,500,500"),
    "timosaemann_enet/enet_deploy_final.prototxt": CONVERT,
    "timosaemann_enet/enet_train_encoder_decoder.prototxt": (REFUSE, "runs arbitrary Python code"),
    "wy1iu_sphereface/sphereface_deploy.prototxt": CONVERT,
    "wy1iu_sphereface/sphereface_model.prototxt": "1,3,112,96",
    "ydwen_caffe-face/face_deploy.prototxt": CONVERT,
    "ydwen_caffe-face/face_train_test.prototxt": given(input_shape="1,3,112,96"),
    "yonghenglh6_depthwiseconvolution/depthwised_mobilenet_deploy.prototxt": CONVERT,
    "yonghenglh6_depthwiseconvolution/fb_cv.pt": CONVERT,
    "yonghenglh6_depthwiseconvolution/fb_dw.pt": CONVERT,
    "eric612_mobilenet-yolo/models/darknet/darknet19_deploy.prototxt": CONVERT,
    "eric612_mobilenet-yolo/models/yolov3/mobilenet_yolov3_lite_deploy.prototxt": CONVERT,
    "eric612_mobilenet-yolo/models/darknet_yolov3/yolov3-spp.prototxt": CONVERT,
    "eric612_mobilenet-yolo/models/tusimple/mobilenet_yolov3_lite_deploy.prototxt": CONVERT,
    "eric612_mobilenet-yolo/models/pelee/VOC0712/SSD_304x304/deploy.prototxt": CONVERT,
    "zhaoweicai_cascade-rcnn/examples/voc/res50-9s-600-rfcn-cascade/deploy.prototxt": CONVERT,
    "zhaoweicai_cascade-rcnn/examples/coco/res50-15s-800-fpn-cascade/deploy.prototxt": CONVERT,
    "sanghoon_pva-faster-rcnn/models/pvanet_obsolete/comp/test.pt": CONVERT,
    "sanghoon_pva-faster-rcnn/models/pvanet/example_train/test.prototxt": CONVERT,
    "mahyarnajibi_ssh/SSH/models/test_ssh.prototxt": CONVERT,
    "sfzhang15_sfd/models/VGGNet/WIDER_FACE/SFD/deploy.prototxt": CONVERT,
    "xzgz_caffe-ssd/models/VGGNet/VOC0712/SSD_300x300/deploy.prototxt": CONVERT,
    "mkchoi-0323_modified_refinedet/deploys/vgg16_320x320/deploy_1000.prototxt": CONVERT,
    "mkchoi-0323_modified_refinedet/deploys/seresnext50_320x320/deploy_1000.prototxt": CONVERT,
    "alexgkendall_caffe-segnet/examples/segnet/deploy.prototxt": (REFUSE_PARSE, 'multiple "name" fields'),
    "isht7_pytorch-deeplab-resnet/data/test_513.prototxt": CONVERT,
    "hszhao_icnet/icnet_cityscapes.prototxt": CONVERT,
    "liuzhuang13_densenetcaffe/test_densenet.prototxt": given(input_shape="1,3,32,32"),
    "tongcheng_dn_caffescript/train_test_BCBN_C10plus.prototxt": CONVERT,
    "shicai_senet-caffe/se_resnet_50_v1_deploy.prototxt": CONVERT,
    "farmingyard_caffe-mobilenet/mobilenet_1by2_deploy.prototxt": CONVERT,
    "aovoc_mobilenetv3-pytorch-caffe/mobilenetv3_small.prototxt": CONVERT,
    "lltcggie_waifu2x-caffe/bin/models/upresnet10/noise0_scale2.0x_model.prototxt": CONVERT,
    "eric612_mobilenetv3-caffe/MobileNetV3.prototxt": CONVERT,
}

#: tests/verify/test_convert_verify_agree.py runs `convert --verify` and `verify` (two full
#: verifications) on the nets up to this many weights; the corpus numerics themselves run on
#: every converting net (tests/converter/test_corpus_numerics.py)
NUMERIC_MAX_WEIGHTS = int(__import__("os").environ.get("PROTOGEN_NUMERIC_MAX_WEIGHTS", 2_000_000))

#: rows that test leaves out (ENet at its 512x1024 input: 73 s on the 2-core machine)
SLOW_NUMERIC = {"timosaemann_enet/enet_deploy_final.prototxt"}


def _manifest_prototxts() -> list[str]:
    if not (CORPUS / "MANIFEST.tsv").is_file():
        return []
    with open(CORPUS / "MANIFEST.tsv", newline="") as f:
        return [r["local_path"] for r in csv.DictReader(f, delimiter="\t")
                if r["format"].startswith("prototxt")]


def test_table_covers_the_manifest():
    listed = set(_manifest_prototxts())
    assert listed, "no prototxt rows in MANIFEST.tsv"
    assert listed == set(EXPECTED), (sorted(listed - set(EXPECTED)), sorted(set(EXPECTED) - listed))


def _n_weights(graph) -> int:
    n = 0
    for st in graph.steps():
        for s in st.layer.kind.weight_shapes(st.layer.params, st.in_shapes):
            k = 1
            for d in s:
                k *= d
            n += k
    return n


def _options(want) -> dict:
    """load_model options of a converting row."""
    if want == CONVERT:
        return {}
    if isinstance(want, str):
        return {"input_shape": want}
    return dict(want)


def _refused(want) -> bool:
    return isinstance(want, tuple)


@pytest.mark.parametrize("rel", sorted(EXPECTED))
def test_corpus_prototxt(rel):
    path = CORPUS / rel
    if not path.exists():
        pytest.skip("file missing from this corpus copy")
    want = EXPECTED[rel]
    if _refused(want):
        kind, why = want[0], want[1]
        options = want[2] if len(want) > 2 else {}
        with pytest.raises(ProtogenError) as ei:
            load_model(path, **options)
        e = ei.value
        assert e.file == str(path)
        assert why in str(e), f"refused for another reason than the table says: {e}"
        if kind == REFUSE:
            assert isinstance(e, UnsupportedError), f"expected the up-front list, got: {e}"
            assert e.items and all(problem for _, _, problem in e.items)
        elif kind == REFUSE_PARSE:
            assert e.line is not None and "malformed prototxt" in e.message
        return
    g = load_model(path, **_options(want))
    steps = g.steps()
    assert g.outputs(), "a converted net has outputs"
    assert all(all(d > 0 for d in s) for st in steps for s in st.out_shapes)
    assert all(l.type == "Input" for l in g.input_layers())


def corpus_figures() -> tuple[int, int, int]:
    """(prototxts, converting, of those given options) — the figures the README quotes."""
    converting = [w for w in EXPECTED.values() if not _refused(w)]
    return len(EXPECTED), len(converting), sum(w != CONVERT for w in converting)


def test_corpus_figures():
    """At least the README's figures (165 prototxts, 160 convert); refusals only shrink."""
    n, ok, _ = corpus_figures()
    assert n == 165 and ok >= 160, (n, ok)
