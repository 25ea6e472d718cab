"""N-D (3-D) convolution geometry shared by Convolution and Deconvolution (:mod:`.conv`).

semantics: BVLC/caffe src/caffe/layers/base_conv_layer.cpp (LayerSetUp): the spatial axes
are the input's axes after the channel axis (``num_spatial_axes = rank - axis - 1``);
``kernel_size``/``stride``/``pad``/``dilation`` hold either one value for every spatial axis
or one value per spatial axis; ``kernel_h``/``kernel_w`` (and the other ``_h``/``_w``
fields) only for 2 spatial axes. conv_layer.cpp compute_output_shape: per axis
``(in + 2 pad - (dilation (k - 1) + 1)) / stride + 1`` (floor); deconv_layer.cpp:
``stride (in - 1) + dilation (k - 1) + 1 - 2 pad``. Weights ``(num_output, C/group, k...)``
for convolution, ``(C, num_output/group, k...)`` for deconvolution; bias ``(num_output,)``.

:class:`ConvParams` keeps the 2-D fields (the last two spatial axes, H and W) and adds the
depth axis of a 3-D convolution (``kernel_d``/``stride_d``/``pad_d``/``dilation_d``), set
when the prototxt gives three values for a field. A layer whose fields hold one value each
(the common ``kernel_size: 3``) applies them to every spatial axis, as Caffe does, whatever
the input's rank. One or three spatial axes are supported (4-D and 5-D blobs).

Two spellings Caffe refuses are read here as the convolution they spell (no numeric
difference, only a net Caffe would not load): three equal values per field on a 4-D input,
and two equal values (or equal ``_h``/``_w``) on a 5-D input, both taken as one value.
"""
from __future__ import annotations

from ..errors import ProtogenError, ShapeError

#: the fields of ConvolutionParameter with one value per spatial axis: (name, default)
ND_FIELDS = (("kernel_size", None), ("stride", 1), ("pad", 0), ("dilation", 1))


def parse_nd(c) -> dict | None:
    """ConvParams keyword arguments for a ``convolution_param`` that gives three values for a
    repeated field (a 3-D convolution), or None when every field has at most two values.
    Three equal values per field read as one value (the same convolution on a 5-D input;
    :func:`explicit` writes 5-D layers that way, the form OpenCV's Caffe importer reads as
    3-D)."""
    vals = {name: tuple(int(v) for v in getattr(c, name)) for name, _ in ND_FIELDS}
    if not any(len(v) == 3 for v in vals.values()):
        return None
    bad = [f"{name} has {len(v)} values" for name, v in vals.items() if len(v) not in (0, 1, 3)]
    if bad:
        raise ProtogenError(f"{'; '.join(bad)}: give one value or one per spatial axis (3)")
    hw = [f for f in ("kernel_h", "kernel_w", "stride_h", "stride_w", "pad_h", "pad_w") if c.HasField(f)]
    if hw:
        raise ProtogenError(f"{', '.join(hw)} apply to 2 spatial axes only; this layer gives 3")
    out = {}
    for (name, dflt), short in zip(ND_FIELDS, ("kernel", "stride", "pad", "dilation")):
        v = vals[name]
        if not v:
            if dflt is None:
                raise ProtogenError("convolution_param needs kernel_size")
            v = (dflt,)
        d, h, w = v * 3 if len(v) == 1 else v
        out.update({f"{short}_d": d, f"{short}_h": h, f"{short}_w": w})
    if all(out[f"{a}_d"] == out[f"{a}_h"] == out[f"{a}_w"] for a in ("kernel", "stride", "pad", "dilation")):
        out.update(kernel_d=0, stride_d=1, pad_d=0, dilation_d=1)
    return out


def explicit(p, rank: int):
    """``p`` with the depth fields set for a 5-D input (one value per spatial axis), else
    ``p``: written so, every field says 3 values, which OpenCV's Caffe importer needs to run a
    3-D convolution (it reads a single kernel_size as 2-D)."""
    from dataclasses import replace
    if rank != 5 or p.kernel_d:
        return p
    return replace(p, kernel_d=p.kernel_h, stride_d=p.stride_h, pad_d=p.pad_h, dilation_d=p.dilation_h)


def axes(p, rank: int, what: str) -> tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...], tuple[int, ...]]:
    """(kernel, stride, pad, dilation) per spatial axis of a ``rank``-D input (4 or 5)."""
    hw = ((p.kernel_h, p.kernel_w), (p.stride_h, p.stride_w), (p.pad_h, p.pad_w),
          (p.dilation_h, p.dilation_w))
    if rank == 4:
        if p.kernel_d:
            raise ShapeError(f"{what} gives 3 spatial values (kernel, stride, pad, dilation) "
                             f"for a 4-D input (2 spatial axes)")
        return hw
    if rank != 5:
        raise ShapeError(f"{what} needs 4-D or 5-D input (2 or 3 spatial axes), got {rank}-D")
    if p.kernel_d:
        return tuple((d,) + t for d, t in zip((p.kernel_d, p.stride_d, p.pad_d, p.dilation_d), hw))
    if any(a != b for a, b in hw):
        raise ShapeError(f"{what} on a 5-D input needs one value, or three, per field "
                         f"(kernel_h/kernel_w and two-value fields are 2-D only)")
    return tuple((a, a, b) for a, b in hw)


def conv_out(sizes, kernel, stride, pad, dilation) -> tuple[int, ...]:
    """conv_layer.cpp compute_output_shape, per spatial axis."""
    return tuple((i + 2 * p - (d * (k - 1) + 1)) // s + 1
                 for i, k, s, p, d in zip(sizes, kernel, stride, pad, dilation))


def deconv_out(sizes, kernel, stride, pad, dilation) -> tuple[int, ...]:
    """deconv_layer.cpp compute_output_shape, per spatial axis."""
    return tuple(s * (i - 1) + d * (k - 1) + 1 - 2 * p
                 for i, k, s, p, d in zip(sizes, kernel, stride, pad, dilation))


def validate_depth(p) -> None:
    if not p.kernel_d:
        return
    if p.kernel_d < 0 or p.stride_d <= 0 or p.dilation_d <= 0 or p.pad_d < 0:
        raise ProtogenError("depth kernel, stride and dilation must be positive, pad >= 0")


def write_nd(p, c) -> None:
    """Write a 3-D layer's fields: three values each, fields at their default omitted."""
    for name, short, dflt in (("kernel_size", "kernel", None), ("stride", "stride", 1),
                              ("pad", "pad", 0), ("dilation", "dilation", 1)):
        v = [getattr(p, f"{short}_{a}") for a in "dhw"]
        if any(a != dflt for a in v):
            getattr(c, name).extend(v)


def fmt_tuple(v) -> str:
    """``3`` for equal values, else ``(3, 5, 5)`` (PyTorch's int-or-tuple arguments)."""
    return str(v[0]) if len(set(v)) == 1 else "(" + ", ".join(str(a) for a in v) + ")"
