// Torquato lineal path L(z) along every axis on the CPU (DESIGN 1.4): exact run-length counts.
//
// Lines are scanned 64 at a time as bit lanes: for each position k along the axis a 64-bit mask holds
// one voxel of each line (packed from 64 adjacent bytes for a strided axis, or by transposing a 64x64
// bit tile for the contiguous axis), and runs start and end where the mask changes, so the work per
// voxel is a few bit operations and the work per run is one count-trailing-zeros. Each task counts
// runs into a private histogram, merged once per batch item; L(z) = segments / windows is then read
// off the histogram (lineal_path_runs.h).
#include <ATen/Parallel.h>

#include <algorithm>
#include <cstring>
#include <mutex>
#include <vector>

#include "lineal_path.h"
#include "lineal_path_runs.h"

static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__, "pack8 assumes little-endian bytes");

namespace {

// Bit i = (p[i] != 0), i < 8.
inline uint64_t pack8(const uint8_t* p) {
  constexpr uint64_t kLow7 = 0x7f7f7f7f7f7f7f7full, kHigh = 0x8080808080808080ull, kGather = 0x0102040810204080ull;
  uint64_t v;
  std::memcpy(&v, p, 8);
  v = (((v & kLow7) + kLow7) | v) & kHigh;  // high bit of every nonzero byte
  return ((v >> 7) * kGather) >> 56;        // byte i's bit moves to bit i of the top byte
}

// Bit i = (p[i] != 0), i < w <= 64.
inline uint64_t pack(const uint8_t* p, int64_t w) {
  uint64_t bits = 0;
  int64_t i = 0;
  for (; i + 8 <= w; i += 8) bits |= pack8(p + i) << i;
  for (; i < w; ++i) bits |= static_cast<uint64_t>(p[i] != 0) << i;
  return bits;
}

// In place: bit j of a[i] <-> bit i of a[j].
inline void transpose64(uint64_t a[64]) {
  uint64_t m = 0x00000000FFFFFFFFull;
  for (int j = 32; j != 0; j >>= 1, m ^= m << j) {
    for (int k = 0; k < 64; k = ((k | j) + 1) & ~j) {
      const uint64_t t = ((a[k] >> j) ^ a[k | j]) & m;
      a[k | j] ^= t;
      a[k] ^= t << j;
    }
  }
}

// Runs of up to 64 lines scanned together, one position k = 0..n-1 at a time. Periodic lines keep
// the run that starts at k = 0 (head) aside and join it to the run that reaches k = n - 1.
class LaneRuns {
 public:
  explicit LaneRuns(bool periodic) : periodic_(periodic) {}

  template <typename Emit>
  void step(uint64_t mask, int64_t k, Emit& emit) {
    for (uint64_t e = prev_ & ~mask; e; e &= e - 1) {
      const int j = __builtin_ctzll(e);
      if (periodic_ && start_[j] == 0) {
        head_[j] = k;
        headed_ |= 1ull << j;
      } else {
        emit(k - start_[j]);
      }
    }
    for (uint64_t s = mask & ~prev_; s; s &= s - 1) start_[__builtin_ctzll(s)] = k;
    prev_ = mask;
  }

  template <typename Emit>
  void finish(int64_t n, Emit& emit) {
    for (uint64_t e = prev_; e; e &= e - 1) {
      const int j = __builtin_ctzll(e);
      emit(n - start_[j] + ((headed_ >> j) & 1 ? head_[j] : 0));  // a full line gives n
    }
    for (uint64_t h = headed_ & ~prev_; h; h &= h - 1) emit(head_[__builtin_ctzll(h)]);
  }

 private:
  bool periodic_;
  uint64_t prev_ = 0, headed_ = 0;
  int64_t start_[64], head_[64];
};

// Runs of w <= 64 lines of n voxels: voxel k of line j at base[k * step + j * lane].
template <typename Emit>
void scan_lanes(const uint8_t* base, int64_t n, int64_t step, int64_t lane, int64_t w, bool periodic, Emit& emit) {
  LaneRuns runs(periodic);
  if (lane == 1) {  // strided axis: the 64 lines are adjacent bytes
    for (int64_t k = 0; k < n; ++k) runs.step(pack(base + k * step, w), k, emit);
  } else {  // contiguous axis (step 1): transpose 64x64 bit tiles
    uint64_t tile[64];
    for (int64_t k0 = 0; k0 < n; k0 += 64) {
      const int64_t kw = std::min<int64_t>(64, n - k0);
      for (int64_t j = 0; j < 64; ++j) tile[j] = j < w ? pack(base + j * lane + k0, kw) : 0;
      transpose64(tile);
      for (int64_t k = 0; k < kw; ++k) runs.step(tile[k], k0 + k, emit);
    }
  }
  runs.finish(n, emit);
}

at::Tensor lineal_path_cpu(const at::Tensor& x, int64_t z_max, bool periodic) {
  m3d::check_lineal_path_args(x, z_max);
  const int64_t batch = x.size(0), ndim = x.dim() - 1, numel = x.numel() / batch, nz = z_max + 1;
  at::Tensor out = at::empty({batch, ndim, nz}, x.options().dtype(at::kDouble));
  const uint8_t* data = x.data_ptr<uint8_t>();
  double* L = out.data_ptr<double>();

  for (int64_t a = 0; a < ndim; ++a) {
    const int64_t n = x.size(a + 1), inner = x.stride(a + 1), lines = numel / n;
    // A block is up to 64 lines: adjacent inner indices (strided axis) or adjacent lines (contiguous axis).
    const bool contiguous = inner == 1;
    const int64_t span = contiguous ? lines : inner;  // lines a block can draw from
    const int64_t per_span = (span + 63) / 64, blocks = (lines / span) * per_span;  // per batch item
    std::vector<int64_t> hist(batch * (n + 1), 0);  // hist[b * (n + 1) + c]: runs of length c
    std::mutex merge;
    at::parallel_for(0, batch * blocks, std::max<int64_t>(1, 4096 / n), [&](int64_t begin, int64_t end) {
      std::vector<int64_t> local(n + 1, 0);
      auto emit = [&](int64_t c) { ++local[c]; };
      int64_t b = begin / blocks;
      auto flush = [&] {
        std::lock_guard<std::mutex> lock(merge);
        for (int64_t c = 1; c <= n; ++c) hist[b * (n + 1) + c] += local[c];
        std::fill(local.begin(), local.end(), 0);
      };
      for (int64_t i = begin; i < end; ++i) {
        if (i / blocks != b) {
          flush();
          b = i / blocks;
        }
        const int64_t outer = (i % blocks) / per_span, first = (i % per_span) * 64, w = std::min<int64_t>(64, span - first);
        const uint8_t* item = data + b * numel;
        if (contiguous)
          scan_lanes(item + first * n, n, 1, n, w, periodic, emit);
        else
          scan_lanes(item + outer * n * inner + first, n, inner, 1, w, periodic, emit);
      }
      flush();
    });
    at::parallel_for(0, batch, 1, [&](int64_t begin, int64_t end) {
      for (int64_t b = begin; b < end; ++b)
        for (int64_t z = 0; z < nz; ++z)
          L[(b * ndim + a) * nz + z] = static_cast<double>(m3d::lineal_path_segments(&hist[b * (n + 1)], n, z, periodic)) /
                                      static_cast<double>(lines * m3d::lineal_path_windows(n, z, periodic));
    });
  }
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(micro3diff, CPU, m) { m.impl("lineal_path", &lineal_path_cpu); }
