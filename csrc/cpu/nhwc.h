// is_nhwc: whether a 4D tensor is laid out channels_last and not also plain contiguous (C == 1 or H * W == 1 are
// both), i.e. whether a CPU kernel should read it as NHWC.
#pragma once
#include <ATen/ATen.h>

inline bool is_nhwc(const at::Tensor& x) {
  return !x.is_contiguous() && x.is_contiguous(at::MemoryFormat::ChannelsLast);
}
