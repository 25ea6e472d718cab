"""IR -> PyTorch: the reference executor.

:class:`TorchNet` runs the deploy view of a graph layer by layer, asking each layer type for
its ``torch_forward`` (Caffe's algorithm written directly on tensors, independently of the
ONNX lowering). Weights are the module's parameters (learnable blobs) and buffers (BatchNorm
statistics); values are keyed by the SSA names of :class:`protogen.ir.Resolved`. Shapes
follow the tensors given, so any batch size (and any input size the net accepts) works.

It is the one executor: :func:`protogen.weights.calibrate_batchnorm` runs it with a ``hook``
that sets each BatchNorm's statistics from the values reaching it.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from .errors import ProtogenError
from .ir import DEPLOY, Graph


class TorchNet(nn.Module):
    def __init__(self, graph: Graph, input_shapes: dict | None = None):
        super().__init__()
        self.resolved = graph.resolve(net=DEPLOY, input_shapes=input_shapes)
        self.graph = self.resolved.graph
        self.steps = self.resolved.steps
        self.output_names = list(self.resolved.outputs)
        self._keys: list[list[str]] = []
        for i, st in enumerate(self.steps):
            l = st.layer
            kind = l.kind
            shapes = kind.weight_shapes(l.params, st.in_shapes)
            learn = kind.learnable(l.params, st.in_shapes)
            keys = []
            for j, (s, is_param) in enumerate(zip(shapes, learn)):
                key = f"blob{i}_{j}"
                data = torch.zeros(tuple(s), dtype=torch.float32)
                if is_param:
                    self.register_parameter(key, nn.Parameter(data, requires_grad=False))
                else:
                    self.register_buffer(key, data)
                keys.append(key)
            self._keys.append(keys)
        self._copied = False
        # follows .double()/.float()/.to() like the weights do, also in nets without weights
        self.register_buffer("_dtype_probe", torch.zeros(0, dtype=torch.float32), persistent=False)

    @classmethod
    def from_graph(cls, graph: Graph, input_shapes: dict | None = None) -> "TorchNet":
        """A TorchNet holding the graph's weights (``layer.blobs``)."""
        net = cls(graph, input_shapes)
        net.load_blobs()
        return net

    def load_blobs(self) -> None:
        """Copy every layer's ``blobs`` (numpy) into the module's tensors."""
        for st, keys in zip(self.steps, self._keys):
            if not keys:
                continue
            l = st.layer
            if not l.blobs or len(l.blobs) < len(keys):
                raise ProtogenError("layer has no weights (fill them with protogen.weights.seeded_weights "
                                    "or load a caffemodel)", layer=l.name)
            for key, b in zip(keys, l.blobs):
                t = getattr(self, key)
                a = np.asarray(b, np.float32)
                if a.size != t.numel():
                    raise ProtogenError(f"weight blob of shape {a.shape} does not fit {tuple(t.shape)}",
                                        layer=l.name)
                with torch.no_grad():
                    t.copy_(torch.as_tensor(np.array(a, copy=True).reshape(tuple(t.shape))))
        self._copied = True

    @property
    def dtype(self) -> torch.dtype:
        """The weights' floating type: float32, or float64 after ``net.double()`` (inputs are
        cast to it; protogen.verify runs its reference in float64)."""
        return self._dtype_probe.dtype

    def layer_blobs(self, name: str) -> list[torch.Tensor]:
        for st, keys in zip(self.steps, self._keys):
            if st.layer.name == name:
                return [getattr(self, k) for k in keys]
        raise KeyError(name)

    def forward(self, inputs: dict, all_blobs: bool = False, hook=None) -> dict[str, torch.Tensor]:
        """Run the net. ``inputs`` maps input blob names to tensors (or arrays); returns the
        net outputs (or, with ``all_blobs``, every SSA value) by SSA name. Values are dropped
        after their last use unless ``all_blobs``.

        ``hook(step, xs)``, when given, is called before each non-input step with its input
        tensors; it may return new weight blobs (arrays) for that layer, which replace the
        module's tensors before the layer runs (BatchNorm calibration)."""
        vals: dict[str, torch.Tensor] = {}
        keep = set(self.output_names)
        last_use = self.resolved.last_use
        for i, (st, keys) in enumerate(zip(self.steps, self._keys)):
            l = st.layer
            kind = l.kind
            if kind.is_input:
                self._feed(st, inputs, vals)
                continue
            xs = [vals[v] for v in st.inputs]
            if hook is not None:
                new = hook(st, xs)
                if new is not None:
                    self._set_blobs(keys, new)
            blobs = [getattr(self, k) for k in keys]
            try:
                outs = kind.torch_forward(l.params, xs, blobs, n_tops=len(st.outputs))
            except ProtogenError as e:
                raise e.with_context(layer=l.name)
            if len(outs) != len(st.outputs):
                raise ProtogenError(f"{l.type} reference gave {len(outs)} outputs for {len(st.outputs)} tops",
                                    layer=l.name)
            for v, t in zip(st.outputs, outs):
                vals[v] = t
            if not all_blobs:
                for v in st.inputs:
                    if last_use.get(v) == i and v not in keep:
                        vals.pop(v, None)
        if all_blobs:
            return vals
        return {o: vals[o] for o in self.output_names}

    def _feed(self, st, inputs: dict, vals: dict) -> None:
        for top, v in zip(st.layer.tops, st.outputs):
            x = inputs.get(v, inputs.get(top))
            if x is None:
                raise ProtogenError(f"no value given for input '{top}'", layer=st.layer.name)
            vals[v] = torch.as_tensor(np.asarray(x, np.float32) if not torch.is_tensor(x) else x,
                                      dtype=self.dtype)

    def _set_blobs(self, keys: list[str], blobs: list) -> None:
        with torch.no_grad():
            for key, b in zip(keys, blobs):
                t = getattr(self, key)
                t.copy_(torch.as_tensor(np.asarray(b, np.float32)).reshape(tuple(t.shape)))


def run(graph: Graph, inputs: dict, all_blobs: bool = False) -> dict[str, np.ndarray]:
    """Convenience: TorchNet.from_graph(graph) on numpy inputs, numpy outputs."""
    net = TorchNet.from_graph(graph)
    with torch.no_grad():
        res = net({k: torch.from_numpy(np.asarray(v, np.float32)) for k, v in inputs.items()}, all_blobs)
    return {k: v.numpy() for k, v in res.items()}
