"""protogen: describe CNNs in a Python DSL, emit Caffe prototxt and ONNX, convert Caffe
models, and prove every result numerically."""
from .dialect import Dialect
from .dsl import Net, TrainData
from .errors import ProtogenError
from .ir import Graph, Layer

__version__ = "0.1.0"
__all__ = ["Net", "TrainData", "Graph", "Layer", "Dialect", "ProtogenError", "__version__"]
