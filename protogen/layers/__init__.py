"""The layer-type registry: one class per Caffe layer type, grouped by family.

``get_type("Convolution")`` returns the object that knows everything about that type.
"""
from .base import Cost, LayerType, get_type, numel, register, registered_types  # noqa: F401
from . import conv, pool, norm, act, tensor, io  # noqa: F401,E402  (registers the types)
from . import act_ext, reduce, crop, bn_ext, resize  # noqa: F401,E402  (fork and extra upstream types, engineer E)
from . import ssd, ssd_detect  # noqa: F401,E402  (SSD family: PriorBox, Normalize, DetectionOutput; engineer F1)
from . import data  # noqa: F401,E402  (more data sources: HDF5Data, MemoryData, DenseImageData, ...; engineer D)
from . import rcnn, yolo  # noqa: F401,E402  (two-stage detectors and YOLO forks; engineer F2)
from . import train_only  # noqa: F401,E402  (losses and metrics the inference view drops; engineer D)
from . import cascade  # noqa: F401,E402  (cascade R-CNN: BoxGroupOutput, DecodeBBox, ScaleRoute)
from . import recurrent  # noqa: F401,E402  (LSTM, RNN: the LRCN examples)
from . import ssh  # noqa: F401,E402  (SSH face detector Python ProposalLayer; engineer F2-ssh)
from . import fork_misc  # noqa: F401,E402  (DenseBlock, MarginInnerProduct, ImageLabelmapData)
from . import c3d  # noqa: F401,E402  (C3D fork: Convolution3D, Pooling3D, VIDEO_DATA)
