"""PyTorch forms of Caffe's recurrent layers (LSTM, RNN): the float64 reference executor calls
these functions, and the generated PyTorch source pastes their text (:func:`emit`), so both
run the one transcription of Caffe's unrolled nets.

Semantics: BVLC/caffe src/caffe/layers/recurrent_layer.cpp (the unrolled net, h_0/c_0 and
expose_hidden), src/caffe/layers/lstm_layer.cpp (FillUnrolledNet of LSTM),
src/caffe/layers/lstm_unit_layer.cpp (the cell step) and src/caffe/layers/rnn_layer.cpp
(FillUnrolledNet of RNN). Imported lazily (torch).
"""
from __future__ import annotations

import inspect


def caffe_lstm(x, cont, w_xc, b_c, w_hc, h=None, c=None, x_static=None, w_xc_static=None):
    """Caffe's LSTM over x (T, N, ...) with cont (T, N); returns (h (T,N,H), h_T, c_T)."""
    t_steps, n = x.shape[0], x.shape[1]
    hid = w_hc.shape[1]
    gx = x.reshape(t_steps, n, -1) @ w_xc.t() + b_c          # x_transform: W_xc x + b_c
    gs = None
    if x_static is not None:                                  # W_xc_static x_static, (1, N, 4H)
        gs = (x_static.reshape(n, -1) @ w_xc_static.t()).reshape(1, n, -1)
    if h is None:                                             # Caffe's first forward: zeros
        h = x.new_zeros(1, n, hid)
        c = x.new_zeros(1, n, hid)
    hs = []
    for t in range(t_steps):
        ct = cont[t].reshape(1, n, 1)
        g = (h * ct) @ w_hc.t() + gx[t:t + 1]                 # h_conted = cont_t * h_{t-1}
        if gs is not None:
            g = g + gs
        i, f, o, gg = g.split(hid, dim=2)                     # gate order i, f, o, g
        f = torch.where(ct == 0, torch.zeros_like(f), ct * torch.sigmoid(f))
        c = f * c + torch.sigmoid(i) * torch.tanh(gg)
        h = torch.sigmoid(o) * torch.tanh(c)
        hs.append(h)
    return torch.cat(hs, 0), h, c


def caffe_lstm_unit(c_prev, x, cont):
    """Caffe's LSTMUnit: c_prev (1, N, H), gate inputs x (1, N, 4H), cont (1, N) -> (c, h)."""
    ct = cont.reshape(1, -1, 1)
    i, f, o, g = x.split(c_prev.shape[2], dim=2)
    f = torch.where(ct == 0, torch.zeros_like(f), ct * torch.sigmoid(f))
    c = f * c_prev + torch.sigmoid(i) * torch.tanh(g)
    return c, torch.sigmoid(o) * torch.tanh(c)


def caffe_rnn(x, cont, w_xh, b_h, w_hh, w_ho, b_o, h=None, x_static=None, w_xh_static=None):
    """Caffe's RNN over x (T, N, ...) with cont (T, N); returns (o (T,N,H), h_T)."""
    t_steps, n = x.shape[0], x.shape[1]
    hid = w_hh.shape[1]
    gx = x.reshape(t_steps, n, -1) @ w_xh.t() + b_h          # x_transform: W_xh x + b_h
    gs = None
    if x_static is not None:
        gs = (x_static.reshape(n, -1) @ w_xh_static.t()).reshape(1, n, -1)
    if h is None:
        h = x.new_zeros(1, n, hid)
    os_ = []
    for t in range(t_steps):
        ct = cont[t].reshape(1, n, 1)
        a = (h * ct) @ w_hh.t() + gx[t:t + 1]
        if gs is not None:
            a = a + gs
        h = torch.tanh(a)                                     # h_t
        os_.append(torch.tanh(h @ w_ho.t() + b_o))            # o_t = tanh(W_ho h_t + b_o)
    return torch.cat(os_, 0), h


def emit(src, name: str) -> str:
    """Paste helper ``name`` into the generated forward() once; returns the name to call."""
    key = f"recurrent_torch.{name}"
    if key not in src.uses:
        src.uses.add(key)
        for ln in inspect.getsource(globals()[name]).rstrip("\n").split("\n"):
            src.line(ln)
    return name


import torch  # noqa: E402  (after the helpers: emit() pastes their source, not this import)
