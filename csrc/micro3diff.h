// Shared declarations for the micro3diff ops.
//
// Layout conventions (documented once here):
//   volumes: (V, D, C, H, W) contiguous float32. V volumes, C channels, spatial (D, H, W).
//   The rotation R maps in[v, d, c, h, w] -> out[v, h, c, w, d]  (shape (V, H, C, W, D)).
#pragma once
#include <torch/library.h>
#include <ATen/ATen.h>

#define M3D_CHECK_CONTIGUOUS(t) TORCH_CHECK((t).is_contiguous(), #t " must be contiguous")
#define M3D_CHECK_FLOAT(t) TORCH_CHECK((t).scalar_type() == at::kFloat, #t " must be float32, got ", (t).scalar_type())
#define M3D_CHECK_DIM(t, n) TORCH_CHECK((t).dim() == (n), #t " must have ", (n), " dims, got ", (t).dim())
#define M3D_CHECK_SAME_SHAPE(a, b) \
  TORCH_CHECK((a).sizes() == (b).sizes(), #a " and " #b " must have the same shape, got ", (a).sizes(), " and ", (b).sizes())
#define M3D_CHECK_SAME_DEVICE(a, b) \
  TORCH_CHECK((a).device() == (b).device(), #a " and " #b " must be on the same device, got ", (a).device(), " and ", (b).device())
