// Op schemas (one per op) and the Python module stub. Device implementations live in csrc/cpu/<op>_cpu.cpp
// and csrc/cuda/<op>_ops.cpp (torch glue around csrc/cuda/<op>_kernel.cu); torch's dispatcher picks the device.
#include <Python.h>
#include <torch/library.h>

extern "C" {
// `import micro3diff._C` loads this library, which registers the ops below as a side effect.
PyObject* PyInit__C(void) {
  static struct PyModuleDef module_def = {PyModuleDef_HEAD_INIT, "_C", nullptr, -1, nullptr};
  return PyModule_Create(&module_def);
}
}

TORCH_LIBRARY(micro3diff, m) {
  // out = R(c_x * x - c_eps * eps + c_z * z); z = noise if given, else Philox(seed, offset).
  // x: (V, D, C, H, W) f32; eps: same shape; rotate -> out (V, H, C, W, D), else (V, D, C, H, W).
  m.def("fused_step(Tensor x, Tensor eps, float c_x, float c_eps, float c_z, bool rotate, Tensor? noise, int seed, int offset) -> Tensor");
  // In-place identity variant: x <- c_x * x - c_eps * eps + c_z * z.
  m.def("fused_step_(Tensor(a!) x, Tensor eps, float c_x, float c_eps, float c_z, Tensor? noise, int seed, int offset) -> ()");
  // In-place rotating variant, cubic volumes only (D == H == W): x <- R(c_x * x - c_eps * eps + c_z * z).
  m.def("fused_step_rotate_(Tensor(a!) x, Tensor eps, float c_x, float c_eps, float c_z, Tensor? noise, int seed, int offset) -> ()");
  // U-Net normalised activation, inference: silu(group_norm(x, groups, weight, bias, eps) * (1 + scale) + shift).
  // x: (N, C, H, W) f32, NCHW or channels_last (out keeps it); scale, shift: (N, C), both or neither. CPU only.
  m.def("group_norm_silu(Tensor x, int groups, Tensor weight, Tensor bias, float eps, Tensor? scale, Tensor? shift) -> Tensor");
  // U-Net 3x3 convolution, stride 1, padding 1 (zero, or circular), inference, by Winograd F(4x4, 3x3):
  // conv2d(x, weight, bias), of x upsampled 2x (nearest) if upsample. x: (N, C, H, W) f32, NCHW or channels_last
  // (out keeps it); weight (O, C, 3, 3); bias (O,). CPU only.
  m.def("conv3x3(Tensor x, Tensor weight, Tensor bias, bool circular, bool upsample) -> Tensor");
  // Torquato lineal path by run lengths; x: (B, *spatial) uint8 (nonzero = phase) -> (B, ndim, z_max + 1) f64.
  m.def("lineal_path(Tensor x, int z_max, bool periodic) -> Tensor");
}
