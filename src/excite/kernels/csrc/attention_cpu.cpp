// CPU kernels for the channel and spatial attention blocks (SE, CBAM's M_c and M_s, CBAM).
//
// Eager PyTorch needs one pass over x per reduction (mean, amax) and per product, and an
// ATen call for every small step; these kernels read x once per stage of the block:
//
//   global_pools(x)          mean and max over the spatial axes       (1 read of x)
//   gated_channel_pools(x,g) mean and max over C of x * g              (1 read of x)
//   apply(x, g, s)           x * g * s                                 (1 read, 1 write)
//   grad_stats(dy, x, g, s)  sum_c g dy x and sum_s dy x s            (1 read of dy and x)
//   maps_grad_dot(x, dmaps)  the maps' share of dL/dg                  (1 read of x)
//   grad_input(dy, ...)      dx of the gates from the small gradients (1 read of dy, 1 write)
//
// and run a whole block in one call per pass, the small steps (the channel MLP, the 'same'
// convolution of the maps, the gates) as loops over plain buffers in between:
//
//   block_forward            inference (no autograd): the first three passes (optionally
//                            ending a residual block: relu(y + identity) in the last)
//   block_train_forward      the same, returning what the backward needs
//   block_backward           the last three passes and every weight gradient
//
// Tensors arrive as (N, C, S) views, either NCS-contiguous (stride(2) == 1) or
// channels-last (stride(1) == 1, the (N, S, C) memory of a channels_last tensor).
// Reductions accumulate in at::opmath_type (float for float16/bfloat16), and products
// round to the input dtype where the reference path does (x * g is a tensor of x's dtype).
// The small tensors (g, s, pooled values) are contiguous. Built with AVX2/FMA where the CPU
// has it (excite.kernels.native); the intrinsics below have portable fallbacks.

#include <torch/extension.h>

#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>

#if defined(__AVX2__) && defined(__FMA__)
#include <immintrin.h>
#endif

#include <algorithm>
#include <string>
#include <type_traits>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <vector>

namespace {

using at::Tensor;

// Which loop nest a (N, C, S) view takes: rows of S (NCS) or rows of C (NSC, channels-last).
// With S == 1 both describe the same memory, and rows of C vectorise where rows of one
// element do not.
bool is_ncs(const Tensor& x3) { return x3.size(2) > 1 ? x3.stride(2) == 1 : x3.stride(1) != 1; }

void check3(const Tensor& x3, const char* name) {
  TORCH_CHECK(x3.dim() == 3, name, " must be an (N, C, S) view, got ", x3.dim(), " dims");
  TORCH_CHECK(x3.device().is_cpu(), name, " must be a CPU tensor");
  bool ncs = x3.stride(2) == 1 && x3.stride(1) == x3.size(2) && x3.stride(0) == x3.size(1) * x3.size(2);
  bool nsc = x3.stride(1) == 1 && x3.stride(2) == x3.size(1) && x3.stride(0) == x3.size(1) * x3.size(2);
  TORCH_CHECK(ncs || nsc || x3.numel() == 0 || x3.size(2) == 1 || x3.size(1) == 1, name,
              " must be contiguous or channels_last");
}

// Element conversions. For bfloat16 they are written as bit operations (round to nearest
// even, NaN kept), bit-identical to c10::BFloat16's, so the compiler vectorises the loops
// that use them; the other types keep their own conversions.
inline float bf16_bits_to_float(uint16_t b) {
  uint32_t u = static_cast<uint32_t>(b) << 16;
  float f;
  std::memcpy(&f, &u, sizeof(f));
  return f;
}

inline uint16_t float_to_bf16_bits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, sizeof(u));
  const uint32_t rounded = (u + UINT32_C(0x7FFF) + ((u >> 16) & 1u)) >> 16;
  return std::isnan(f) ? UINT16_C(0x7FC0) : static_cast<uint16_t>(rounded);
}

template <typename T>
inline at::opmath_type<T> to_acc(T v) { return static_cast<at::opmath_type<T>>(v); }
template <>
inline float to_acc<c10::BFloat16>(c10::BFloat16 v) { return bf16_bits_to_float(v.x); }

template <typename T>
inline T from_acc(at::opmath_type<T> v) { return static_cast<T>(v); }
template <>
inline c10::BFloat16 from_acc<c10::BFloat16>(float v) {
  return c10::BFloat16(float_to_bf16_bits(v), c10::BFloat16::from_bits());
}

// v rounded to T and back: the value a T tensor would hold (identity for float, double)
template <typename T>
inline at::opmath_type<T> round_to(at::opmath_type<T> v) { return to_acc<T>(from_acc<T>(v)); }
template <>
inline float round_to<float>(float v) { return v; }
template <>
inline double round_to<double>(double v) { return v; }

// Elements (or multiply-adds) a thread takes at least: a parallel region costs more than
// the work below this on the machines measured (2-core VMs; waking the pool's threads).
constexpr int64_t kGrain = int64_t(1) << 15;

#if defined(__AVX2__) && defined(__FMA__)
// lanes 0..n-1 set (none for n <= 0, all for n >= 8): masked loads and stores of a row's last values
inline __m256i tail_mask(int64_t n) {
  return _mm256_cmpgt_epi32(_mm256_set1_epi32(static_cast<int>(n)), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}

inline float hsum(__m256 v) {
  const __m128 h = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  const __m128 h2 = _mm_add_ps(h, _mm_movehl_ps(h, h));
  return _mm_cvtss_f32(_mm_add_ss(h2, _mm_movehdup_ps(h2)));
}

inline float hmax(__m256 v) {
  const __m128 h = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  const __m128 h2 = _mm_max_ps(h, _mm_movehl_ps(h, h));
  return _mm_cvtss_f32(_mm_max_ss(h2, _mm_movehdup_ps(h2)));
}

// 8 floats, or the first n of them (the other lanes read as 0; nothing read past them)
inline __m256 load8(const float* p) { return _mm256_loadu_ps(p); }
inline __m256 load8(const float* p, int64_t n) { return _mm256_maskload_ps(p, tail_mask(n)); }

// sum, max and the first position of the max of a row of s floats, in registers (a NaN
// in the row shows in the sum; the caller then takes the scalar loop's NaN rules).
// float only: bfloat16 measured slower through explicit conversions than through the
// compiler's vectorisation of the bit-operation loops below.
void row_pools(const float* row, int64_t s, bool want_max, bool want_idx, float& sum, float& mx, int64_t& im) {
  __m256 vs = _mm256_setzero_ps();
  const __m256 ninf = _mm256_set1_ps(-std::numeric_limits<float>::infinity());
  __m256 vm = ninf;
  __m256i vi = _mm256_setzero_si256();
  __m256i pos = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
  const __m256i step = _mm256_set1_epi32(8);
  int64_t j = 0;
  if (!want_idx) {  // four independent sums (and maxima) in flight
    __m256 vs1 = _mm256_setzero_ps(), vs2 = _mm256_setzero_ps(), vs3 = _mm256_setzero_ps();
    __m256 vm1 = ninf, vm2 = ninf, vm3 = ninf;
    for (; j + 32 <= s; j += 32) {
      const __m256 v0 = load8(row + j), v1 = load8(row + j + 8);
      const __m256 v2 = load8(row + j + 16), v3 = load8(row + j + 24);
      vs = _mm256_add_ps(vs, v0);
      vs1 = _mm256_add_ps(vs1, v1);
      vs2 = _mm256_add_ps(vs2, v2);
      vs3 = _mm256_add_ps(vs3, v3);
      if (want_max) {
        vm = _mm256_max_ps(v0, vm);
        vm1 = _mm256_max_ps(v1, vm1);
        vm2 = _mm256_max_ps(v2, vm2);
        vm3 = _mm256_max_ps(v3, vm3);
      }
    }
    vs = _mm256_add_ps(_mm256_add_ps(vs, vs1), _mm256_add_ps(vs2, vs3));
    vm = _mm256_max_ps(_mm256_max_ps(vm, vm1), _mm256_max_ps(vm2, vm3));
  }
  // with the argmax: a second group of lanes (positions j + 8 ...) in flight beside the first
  __m256 vmb = ninf, vsb = _mm256_setzero_ps();
  __m256i vib = _mm256_setzero_si256();
  if (want_idx) {
    const __m256i step2 = _mm256_set1_epi32(16);
    __m256i posb = _mm256_add_epi32(pos, step);
    for (; j + 16 <= s; j += 16) {
      const __m256 v = load8(row + j), w = load8(row + j + 8);
      vs = _mm256_add_ps(vs, v);
      vsb = _mm256_add_ps(vsb, w);
      const __m256 gt = _mm256_cmp_ps(v, vm, _CMP_GT_OQ), gtb = _mm256_cmp_ps(w, vmb, _CMP_GT_OQ);
      vm = _mm256_blendv_ps(vm, v, gt);
      vmb = _mm256_blendv_ps(vmb, w, gtb);
      vi = _mm256_blendv_epi8(vi, pos, _mm256_castps_si256(gt));
      vib = _mm256_blendv_epi8(vib, posb, _mm256_castps_si256(gtb));
      pos = _mm256_add_epi32(pos, step2);
      posb = _mm256_add_epi32(posb, step2);
    }
    vs = _mm256_add_ps(vs, vsb);
  }
  for (; j + 8 <= s; j += 8) {
    const __m256 v = load8(row + j);
    vs = _mm256_add_ps(vs, v);
    if (want_idx) {
      const __m256 gt = _mm256_cmp_ps(v, vm, _CMP_GT_OQ);
      vm = _mm256_blendv_ps(vm, v, gt);
      vi = _mm256_blendv_epi8(vi, pos, _mm256_castps_si256(gt));
      pos = _mm256_add_epi32(pos, step);
    } else if (want_max) {
      vm = _mm256_max_ps(v, vm);
    }
  }
  if (j < s) {
    const __m256i mask = tail_mask(s - j);
    const __m256 v0 = load8(row + j, s - j);
    vs = _mm256_add_ps(vs, v0);
    const __m256 v = _mm256_blendv_ps(ninf, v0, _mm256_castsi256_ps(mask));
    if (want_idx) {
      const __m256 gt = _mm256_cmp_ps(v, vm, _CMP_GT_OQ);
      vm = _mm256_blendv_ps(vm, v, gt);
      vi = _mm256_blendv_epi8(vi, pos, _mm256_castps_si256(gt));
    } else if (want_max) {
      vm = _mm256_max_ps(v, vm);
    }
  }
  sum = hsum(vs);
  if (!want_max && !want_idx) return;
  mx = want_idx ? hmax(_mm256_max_ps(vm, vmb)) : hmax(vm);
  if (!want_idx) return;
  // the first position holding the max: the least index over both groups' lanes that hold
  // it (a row of -inf: every lane holds it with index 0, its first position)
  const __m256 mxv = _mm256_set1_ps(mx);
  const __m256i none = _mm256_set1_epi32(std::numeric_limits<int32_t>::max());
  const __m256i ia = _mm256_blendv_epi8(none, vi, _mm256_castps_si256(_mm256_cmp_ps(vm, mxv, _CMP_EQ_OQ)));
  const __m256i ib = _mm256_blendv_epi8(none, vib, _mm256_castps_si256(_mm256_cmp_ps(vmb, mxv, _CMP_EQ_OQ)));
  const __m256i least = _mm256_min_epi32(ia, ib);
  __m128i h = _mm_min_epi32(_mm256_castsi256_si128(least), _mm256_extracti128_si256(least, 1));
  h = _mm_min_epi32(h, _mm_shuffle_epi32(h, 0x4E));
  h = _mm_min_epi32(h, _mm_shuffle_epi32(h, 0xB1));
  const int32_t first = _mm_cvtsi128_si32(h);
  im = first == std::numeric_limits<int32_t>::max() ? 0 : first;
}
#endif

template <typename acc_t>
inline bool max_update(acc_t v, acc_t m) {
  // true when v replaces the running maximum m: larger, or the first NaN (torch.max semantics)
  return (v > m || std::isnan(v)) && !std::isnan(m);
}

// --------------------------------------------------------------------------- global pools
// Raw kernel: avg[r] (acc_t) and mx[r] (max_t), idx[r] over the S positions of each of the
// N*C rows r of x (NCS or NSC memory); any of the three outputs may be null.
template <typename scalar_t, typename max_t>
void global_pools_kernel(const scalar_t* xp, int64_t n, int64_t c, int64_t s, bool ncs,
                         at::opmath_type<scalar_t>* ap, max_t* mp, int64_t* ip) {
  using acc_t = at::opmath_type<scalar_t>;
  if (ncs) {
    at::parallel_for(0, n * c, std::max<int64_t>(1, kGrain / std::max<int64_t>(s, 1)), [&](int64_t b, int64_t e) {
      for (int64_t r = b; r < e; ++r) {
        const scalar_t* row = xp + r * s;
        acc_t sum = 0;
        acc_t m = -std::numeric_limits<acc_t>::infinity();
        int64_t im = 0;
        if (s < 8) {  // rows shorter than a vector: plain loops cost least
          for (int64_t j = 0; j < s; ++j) {
            const acc_t v = to_acc(row[j]);
            sum += v;
            if (v > m) {
              m = v;
              im = j;
            }
          }
        } else
#if defined(__AVX2__) && defined(__FMA__)
        if constexpr (std::is_same<scalar_t, float>::value) {
          row_pools(row, s, mp != nullptr, ip != nullptr, sum, m, im);
        } else
#endif
        if (ip == nullptr && s < 16) {  // short rows: a vectorised reduction costs more than it saves
          for (int64_t j = 0; j < s; ++j) {
            acc_t v = to_acc(row[j]);
            sum += v;
            m = v > m ? v : m;
          }
        } else if (ip == nullptr) {
_Pragma("omp simd reduction(+ : sum) reduction(max : m)")
          for (int64_t j = 0; j < s; ++j) {
            acc_t v = to_acc(row[j]);
            sum += v;
            m = v > m ? v : m;
          }
        } else {  // max and argmax per lane (branch-free, vectorised), then across lanes
          constexpr int64_t lanes = 8;
          acc_t lsum[lanes], lm[lanes];
          int32_t li[lanes];
          for (int64_t l = 0; l < lanes; ++l) { lsum[l] = 0; lm[l] = -std::numeric_limits<acc_t>::infinity(); li[l] = 0; }
          const int64_t full = s - s % lanes;
          for (int64_t j = 0; j < full; j += lanes) {
_Pragma("omp simd")
            for (int64_t l = 0; l < lanes; ++l) {
              const acc_t v = to_acc(row[j + l]);
              lsum[l] += v;
              const bool upd = v > lm[l];
              lm[l] = upd ? v : lm[l];
              li[l] = upd ? static_cast<int32_t>(j + l) : li[l];
            }
          }
          for (int64_t j = full; j < s; ++j) {
            const acc_t v = to_acc(row[j]);
            lsum[j - full] += v;
            if (v > lm[j - full]) { lm[j - full] = v; li[j - full] = static_cast<int32_t>(j); }
          }
          im = s;  // the first position among the lanes holding the max
          for (int64_t l = 0; l < lanes; ++l) {
            sum += lsum[l];
            if (lm[l] > m) m = lm[l];
          }
          for (int64_t l = 0; l < lanes; ++l) {
            if (lm[l] == m && li[l] < im) im = li[l];
          }
          if (im == s) im = 0;  // every value -inf
        }
        if (std::isnan(sum)) {  // rare (a NaN, or inf - inf): the first NaN is the max
          m = to_acc(row[0]);
          im = 0;
          for (int64_t j = 0; j < s; ++j) {
            acc_t v = to_acc(row[j]);
            if (max_update(v, m)) { m = v; im = j; }
          }
        }
        if (ap != nullptr) ap[r] = sum / static_cast<acc_t>(s);
        if (mp != nullptr) mp[r] = static_cast<max_t>(m);
        if (ip != nullptr) ip[r] = im;
      }
    });
  } else {  // channels-last: rows of C contiguous values, one per position
    const int64_t cblock = 256;
    const int64_t nblocks = (c + cblock - 1) / cblock;
    const int64_t grain = std::max<int64_t>(1, kGrain / std::max<int64_t>(s * std::min(c, cblock), 1));
    at::parallel_for(0, n * nblocks, grain, [&](int64_t b, int64_t e) {
      acc_t sum[cblock], m[cblock];
      int64_t im[cblock];
      for (int64_t t = b; t < e; ++t) {
        const int64_t i = t / nblocks, c0 = (t % nblocks) * cblock, cn = std::min(cblock, c - c0);
        const scalar_t* base = xp + i * s * c + c0;
        for (int64_t k = 0; k < cn; ++k) { sum[k] = 0; m[k] = to_acc(base[k]); im[k] = 0; }
        for (int64_t j = 0; j < s; ++j) {
          const scalar_t* row = base + j * c;
          if (ip != nullptr) {
            for (int64_t k = 0; k < cn; ++k) {
              acc_t v = to_acc(row[k]);
              sum[k] += v;
              if (max_update(v, m[k])) { m[k] = v; im[k] = j; }
            }
          } else {
_Pragma("omp simd")
            for (int64_t k = 0; k < cn; ++k) {
              acc_t v = to_acc(row[k]);
              sum[k] += v;
              m[k] = (v > m[k] || std::isnan(v)) ? v : m[k];
            }
          }
        }
        for (int64_t k = 0; k < cn; ++k) {
          const int64_t r = i * c + c0 + k;
          if (ap != nullptr) ap[r] = sum[k] / static_cast<acc_t>(s);
          if (mp != nullptr) mp[r] = static_cast<max_t>(m[k]);
          if (ip != nullptr) ip[r] = im[k];
        }
      }
    });
  }
}

std::vector<Tensor> global_pools(const Tensor& x3, bool want_avg, bool want_max, bool need_index) {
  check3(x3, "x");
  const int64_t n = x3.size(0), c = x3.size(1), s = x3.size(2);
  auto acc_dtype = at::toOpMathType(x3.scalar_type());
  Tensor avg = want_avg ? at::empty({n, c}, x3.options().dtype(acc_dtype)) : Tensor();
  Tensor mx = want_max ? at::empty({n, c}, x3.options()) : Tensor();
  Tensor idx = (want_max && need_index) ? at::empty({n, c}, x3.options().dtype(at::kLong)) : Tensor();
  if (x3.numel() == 0) return {avg, mx, idx};
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x3.scalar_type(), "global_pools", [&] {
    global_pools_kernel<scalar_t, scalar_t>(
        x3.const_data_ptr<scalar_t>(), n, c, s, is_ncs(x3),
        want_avg ? avg.mutable_data_ptr<at::opmath_type<scalar_t>>() : nullptr,
        want_max ? mx.mutable_data_ptr<scalar_t>() : nullptr,
        idx.defined() ? idx.mutable_data_ptr<int64_t>() : nullptr);
  });
  return {avg, mx, idx};
}

// ------------------------------------------------------------------- gated channel pools
// Raw kernel: maps[n, p, s] (map_t) over c of y = x * g (y rounded to x's dtype), the mean
// in slot avg_slot and the max in max_slot (-1: not wanted) of p slots; idx[n, s] = argmax
// channel (null: not wanted); g (N, C) of x's dtype, or null for g = 1.
template <typename scalar_t, typename map_t>
void gated_channel_pools_kernel(const scalar_t* xp, const scalar_t* gp, int64_t n, int64_t c, int64_t s,
                                bool ncs, int64_t p, int64_t avg_slot, int64_t max_slot, map_t* op,
                                int64_t* ip) {
  using acc_t = at::opmath_type<scalar_t>;
  const acc_t inv_c = acc_t(1) / static_cast<acc_t>(c);
  auto store = [&](int64_t i, int64_t j, acc_t sum, acc_t m, int64_t im) {
    if (avg_slot >= 0) op[(i * p + avg_slot) * s + j] = static_cast<map_t>(sum * inv_c);
    if (max_slot >= 0) op[(i * p + max_slot) * s + j] = static_cast<map_t>(m);
    if (ip != nullptr) ip[i * s + j] = im;
  };
#if defined(__AVX2__) && defined(__FMA__)
  if constexpr (std::is_same<scalar_t, float>::value) {
    if (ncs) {  // 32 positions at a time, their sums, maxima and argmax in registers across C
      constexpr int64_t sblock = 32;
      const int64_t nblocks = (s + sblock - 1) / sblock;
      const int64_t grain = std::max<int64_t>(1, kGrain / std::max<int64_t>(c * std::min(s, sblock), 1));
      at::parallel_for(0, n * nblocks, grain, [&](int64_t b, int64_t e) {
        alignas(32) float sum[sblock], mx[sblock];
        alignas(32) int32_t im[sblock];
        for (int64_t t = b; t < e; ++t) {
          const int64_t i = t / nblocks, s0 = (t % nblocks) * sblock, sn = std::min(sblock, s - s0);
          const scalar_t* base = xp + i * c * s + s0;
          __m256 vs[4], vm[4];
          __m256i vi[4];
          for (int q = 0; q < 4; ++q) {
            vs[q] = _mm256_setzero_ps();
            vm[q] = _mm256_set1_ps(-std::numeric_limits<float>::infinity());
            vi[q] = _mm256_setzero_si256();
          }
          const int nq = static_cast<int>((sn + 7) / 8);
          for (int64_t ch = 0; ch < c; ++ch) {
            const __m256 gv = _mm256_set1_ps(gp != nullptr ? to_acc(gp[i * c + ch]) : 1.0f);
            const __m256i chv = _mm256_set1_epi32(static_cast<int32_t>(ch));
            const scalar_t* row = base + ch * s;
            // the next block of this row: one stream per channel is more than the hardware
            // prefetchers follow
            _mm_prefetch(reinterpret_cast<const char*>(row + sblock), _MM_HINT_T0);
            _mm_prefetch(reinterpret_cast<const char*>(row + sblock + 16), _MM_HINT_T0);
            for (int q = 0; q < nq; ++q) {
              const __m256 xv = 8 * q + 8 <= sn ? load8(row + 8 * q) : load8(row + 8 * q, sn - 8 * q);
              const __m256 y = _mm256_mul_ps(xv, gv);
              vs[q] = _mm256_add_ps(vs[q], y);
              // max_update without branches: larger, or the first NaN (m stays NaN after)
              const __m256 upd = _mm256_andnot_ps(
                  _mm256_cmp_ps(vm[q], vm[q], _CMP_UNORD_Q),
                  _mm256_or_ps(_mm256_cmp_ps(y, vm[q], _CMP_GT_OQ), _mm256_cmp_ps(y, y, _CMP_UNORD_Q)));
              vm[q] = _mm256_blendv_ps(vm[q], y, upd);
              if (ip != nullptr) vi[q] = _mm256_blendv_epi8(vi[q], chv, _mm256_castps_si256(upd));
            }
          }
          for (int q = 0; q < nq; ++q) {
            _mm256_store_ps(sum + 8 * q, vs[q]);
            _mm256_store_ps(mx + 8 * q, vm[q]);
            _mm256_store_si256(reinterpret_cast<__m256i*>(im + 8 * q), vi[q]);
          }
          for (int64_t k = 0; k < sn; ++k) store(i, s0 + k, sum[k], mx[k], im[k]);
        }
      });
      return;
    }
  }
#endif
  if (ncs) {
    constexpr int64_t sblock = 512;
    const int64_t nblocks = (s + sblock - 1) / sblock;
    const int64_t grain = std::max<int64_t>(1, kGrain / std::max<int64_t>(c * std::min(s, sblock), 1));
    at::parallel_for(0, n * nblocks, grain, [&](int64_t b, int64_t e) {
      acc_t sum[sblock], m[sblock], y[sblock];
      int32_t im[sblock];
      for (int64_t t = b; t < e; ++t) {
        const int64_t i = t / nblocks, s0 = (t % nblocks) * sblock, sn = std::min(sblock, s - s0);
        const scalar_t* base = xp + i * c * s + s0;
        for (int64_t k = 0; k < sn; ++k) {
          sum[k] = 0; m[k] = -std::numeric_limits<acc_t>::infinity(); im[k] = 0;
        }
        for (int64_t ch = 0; ch < c; ++ch) {
          const acc_t gv = gp != nullptr ? to_acc(gp[i * c + ch]) : acc_t(1);
          const scalar_t* row = base + ch * s;
          // two simple loops vectorise where one fused loop does not (bfloat16)
_Pragma("omp simd")
          for (int64_t k = 0; k < sn; ++k) y[k] = round_to<scalar_t>(to_acc(row[k]) * gv);
          if (ip != nullptr) {
            const int32_t chi = static_cast<int32_t>(ch);
_Pragma("omp simd")
            for (int64_t k = 0; k < sn; ++k) {
              sum[k] += y[k];
              // max_update without branches; m starts at -inf, so channel 0 always sets it
              const bool upd = (y[k] > m[k] || y[k] != y[k]) && m[k] == m[k];
              m[k] = upd ? y[k] : m[k];
              im[k] = upd ? chi : im[k];
            }
          } else {
_Pragma("omp simd")
            for (int64_t k = 0; k < sn; ++k) {
              sum[k] += y[k];
              m[k] = (y[k] > m[k] || std::isnan(y[k])) ? y[k] : m[k];
            }
          }
        }
        for (int64_t k = 0; k < sn; ++k) store(i, s0 + k, sum[k], m[k], im[k]);
      }
    });
  } else {
    at::parallel_for(0, n * s, std::max<int64_t>(1, kGrain / std::max<int64_t>(c, 1)), [&](int64_t b, int64_t e) {
      for (int64_t r = b; r < e; ++r) {
        const int64_t i = r / s, j = r % s;
        const scalar_t* row = xp + r * c;
        const scalar_t* gr = gp != nullptr ? gp + i * c : nullptr;
        acc_t sum = 0;
        acc_t m = -std::numeric_limits<acc_t>::infinity();
        int64_t im = 0;
        if (ip != nullptr) {
          for (int64_t k = 0; k < c; ++k) {
            acc_t y = round_to<scalar_t>(to_acc(row[k]) * (gr != nullptr ? to_acc(gr[k]) : acc_t(1)));
            sum += y;
            if (k == 0 || max_update(y, m)) { m = y; im = k; }
          }
        } else {
_Pragma("omp simd reduction(+ : sum) reduction(max : m)")
          for (int64_t k = 0; k < c; ++k) {
            acc_t y = round_to<scalar_t>(to_acc(row[k]) * (gr != nullptr ? to_acc(gr[k]) : acc_t(1)));
            sum += y;
            m = y > m ? y : m;
          }
          if (std::isnan(sum)) m = sum;
        }
        store(i, j, sum, m, im);
      }
    });
  }
}

// maps[n, p, s] over c of y = x * g: p = mean if want_avg first, then max; idx[n, s] =
// argmax channel. Maps are returned in x's dtype.
std::vector<Tensor> gated_channel_pools(const Tensor& x3, const Tensor& g, bool avg_first,
                                        bool want_avg, bool want_max, bool need_index) {
  check3(x3, "x");
  const int64_t n = x3.size(0), c = x3.size(1), s = x3.size(2);
  TORCH_CHECK(g.is_contiguous() && g.dim() == 2 && g.size(0) == n && g.size(1) == c &&
                  g.scalar_type() == x3.scalar_type(),
              "g must be a contiguous (N, C) tensor of x's dtype");
  const int64_t p = static_cast<int64_t>(want_avg) + static_cast<int64_t>(want_max);
  TORCH_CHECK(p > 0, "at least one of the mean and max maps is needed");
  Tensor maps = at::empty({n, p, s}, x3.options());
  Tensor idx = (want_max && need_index) ? at::empty({n, s}, x3.options().dtype(at::kLong)) : Tensor();
  if (x3.numel() == 0) return {maps, idx};
  const int64_t avg_slot = want_avg ? (avg_first || !want_max ? 0 : 1) : -1;
  const int64_t max_slot = want_max ? (want_avg ? 1 - avg_slot : 0) : -1;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x3.scalar_type(), "gated_channel_pools", [&] {
    gated_channel_pools_kernel<scalar_t, scalar_t>(
        x3.const_data_ptr<scalar_t>(), g.const_data_ptr<scalar_t>(), n, c, s, is_ncs(x3), p, avg_slot,
        max_slot, maps.mutable_data_ptr<scalar_t>(), idx.defined() ? idx.mutable_data_ptr<int64_t>() : nullptr);
  });
  return {maps, idx};
}

// ------------------------------------------------------------------------------- apply
// Raw kernel: out = (x * g) * s with both products rounded to x's dtype; g (N, C) and s
// (N, S) of x's dtype (null: 1); out laid out as x.
// Outputs of kStreamBytes up to kStreamMaxBytes are written with streaming stores (float,
// AVX2): an output larger than the caches would otherwise be read into them before being
// written. Above 32 MiB (glibc's largest mmap threshold) an output is fresh pages from
// mmap, which the kernel zero-fills through the caches on first touch: plain stores then
// hit the cache, and streaming stores measured slower there.
constexpr int64_t kStreamBytes = int64_t(16) << 20;
constexpr int64_t kStreamMaxBytes = int64_t(32) << 20;

// orow[j] = (xr[j] * gv) * sr[j] (sr null: 1) with non-temporal stores; false where not
// available (the caller then runs its own loop)
template <typename T>
bool stream_row(const T*, T, const T*, T*, int64_t) { return false; }

#if defined(__AVX2__) && defined(__FMA__)
template <>
bool stream_row<float>(const float* xr, float gv, const float* sr, float* orow, int64_t s) {
  int64_t j = 0;
  for (; j < s && (reinterpret_cast<uintptr_t>(orow + j) & 31) != 0; ++j) {
    orow[j] = sr != nullptr ? (xr[j] * gv) * sr[j] : xr[j] * gv;
  }
  const __m256 g = _mm256_set1_ps(gv);
  if (sr != nullptr) {
    for (; j + 8 <= s; j += 8) {
      _mm256_stream_ps(orow + j, _mm256_mul_ps(_mm256_mul_ps(_mm256_loadu_ps(xr + j), g), _mm256_loadu_ps(sr + j)));
    }
  } else {
    for (; j + 8 <= s; j += 8) _mm256_stream_ps(orow + j, _mm256_mul_ps(_mm256_loadu_ps(xr + j), g));
  }
  for (; j < s; ++j) orow[j] = sr != nullptr ? (xr[j] * gv) * sr[j] : xr[j] * gv;
  return true;
}
#endif

inline void stream_fence() {
#if defined(__AVX2__) && defined(__FMA__)
  _mm_sfence();
#endif
}

template <typename scalar_t>
void apply_kernel(const scalar_t* xp, const scalar_t* gp, const scalar_t* sp, scalar_t* op, int64_t n,
                  int64_t c, int64_t s, bool ncs, const scalar_t* rp = nullptr) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t bytes = n * c * s * static_cast<int64_t>(sizeof(scalar_t));
  const bool stream = rp == nullptr && bytes >= kStreamBytes && bytes <= kStreamMaxBytes;
  // a residual block's end, relu(out + residual), on the row just written (still in cache)
  auto epilogue = [&](scalar_t* orow, const scalar_t* rrow, int64_t len) {
_Pragma("omp simd")
    for (int64_t j = 0; j < len; ++j) {
      const acc_t v = round_to<scalar_t>(to_acc(orow[j]) + to_acc(rrow[j]));
      orow[j] = from_acc<scalar_t>(v < acc_t(0) ? acc_t(0) : v);
    }
  };
  if (ncs) {
    at::parallel_for(0, n * c, std::max<int64_t>(1, kGrain / std::max<int64_t>(s, 1)), [&](int64_t b, int64_t e) {
      for (int64_t r = b; r < e; ++r) {
        const acc_t gv = gp != nullptr ? to_acc(gp[r]) : acc_t(1);
        const scalar_t* xr = xp + r * s;
        scalar_t* orow = op + r * s;
        if (stream && stream_row<scalar_t>(xr, static_cast<scalar_t>(gv), sp != nullptr ? sp + (r / c) * s : nullptr, orow, s)) {
          continue;
        }
#if defined(__AVX2__) && defined(__FMA__)
        if constexpr (std::is_same<scalar_t, float>::value) {  // the same products, 8 lanes at a time
          const __m256 g8 = _mm256_set1_ps(gv), zero = _mm256_setzero_ps();
          const float* sr = sp != nullptr ? sp + (r / c) * s : nullptr;
          const float* rr = rp != nullptr ? rp + r * s : nullptr;
          auto lanes = [&](int64_t j, int64_t len) {  // len < 8: the row's last values
            auto load = [&](const float* q) { return len >= 8 ? load8(q + j) : load8(q + j, len); };
            __m256 y = _mm256_mul_ps(load(xr), g8);
            if (sr != nullptr) y = _mm256_mul_ps(y, load(sr));
            if (rr != nullptr) y = _mm256_max_ps(zero, _mm256_add_ps(y, load(rr)));  // NaN kept
            if (len >= 8) {
              _mm256_storeu_ps(orow + j, y);
            } else {
              _mm256_maskstore_ps(orow + j, tail_mask(len), y);
            }
          };
          int64_t j = 0;
          for (; j + 8 <= s; j += 8) lanes(j, 8);
          if (j < s) lanes(j, s - j);
          continue;
        }
#endif
        if (sp != nullptr) {
          const scalar_t* sr = sp + (r / c) * s;
_Pragma("omp simd")
          for (int64_t j = 0; j < s; ++j) orow[j] = from_acc<scalar_t>(round_to<scalar_t>(to_acc(xr[j]) * gv) * to_acc(sr[j]));
        } else {
_Pragma("omp simd")
          for (int64_t j = 0; j < s; ++j) orow[j] = from_acc<scalar_t>(to_acc(xr[j]) * gv);
        }
        if (rp != nullptr) epilogue(orow, rp + r * s, s);
      }
      if (stream) stream_fence();
    });
  } else {
    at::parallel_for(0, n * s, std::max<int64_t>(1, kGrain / std::max<int64_t>(c, 1)), [&](int64_t b, int64_t e) {
      for (int64_t r = b; r < e; ++r) {
        const int64_t i = r / s;
        const scalar_t* xr = xp + r * c;
        scalar_t* orow = op + r * c;
        const acc_t sv = sp != nullptr ? to_acc(sp[r]) : acc_t(1);
        if (gp != nullptr) {
          const scalar_t* gr = gp + i * c;
_Pragma("omp simd")
          for (int64_t k = 0; k < c; ++k) orow[k] = from_acc<scalar_t>(round_to<scalar_t>(to_acc(xr[k]) * to_acc(gr[k])) * sv);
        } else {
_Pragma("omp simd")
          for (int64_t k = 0; k < c; ++k) orow[k] = from_acc<scalar_t>(to_acc(xr[k]) * sv);
        }
        if (rp != nullptr) epilogue(orow, rp + r * c, c);
      }
    });
  }
}

// out = (x * g) * s; g (N, C) and s (N, S) (or an undefined s: out = x * g). Written into
// out3 when given (an (N, C, S) view with x3's strides, e.g. of a fresh full-rank tensor),
// else into a new tensor of x3's layout.
Tensor apply(const Tensor& x3, const Tensor& g, const c10::optional<Tensor>& s_opt,
             const c10::optional<Tensor>& out_opt) {
  check3(x3, "x");
  const int64_t n = x3.size(0), c = x3.size(1), s = x3.size(2);
  TORCH_CHECK(g.is_contiguous() && g.size(0) == n && g.size(1) == c && g.scalar_type() == x3.scalar_type(),
              "g must be a contiguous (N, C) tensor of x's dtype");
  const bool has_s = s_opt.has_value() && s_opt->defined();
  if (has_s) {
    TORCH_CHECK(s_opt->is_contiguous() && s_opt->numel() == n * s && s_opt->scalar_type() == x3.scalar_type(),
                "s must be a contiguous (N, S) tensor of x's dtype");
  }
  Tensor out;
  if (out_opt.has_value() && out_opt->defined()) {
    out = *out_opt;
    TORCH_CHECK(out.sizes() == x3.sizes() && out.strides() == x3.strides() && out.scalar_type() == x3.scalar_type(),
                "out must have x's shape, strides and dtype");
  } else {
    out = at::empty_strided(x3.sizes(), x3.strides(), x3.options());
  }
  if (x3.numel() == 0) return out;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x3.scalar_type(), "apply", [&] {
    apply_kernel<scalar_t>(x3.const_data_ptr<scalar_t>(), g.const_data_ptr<scalar_t>(),
                           has_s ? s_opt->const_data_ptr<scalar_t>() : nullptr, out.mutable_data_ptr<scalar_t>(),
                           n, c, s, is_ncs(x3));
  });
  return out;
}

// --------------------------------------------------------------------------- gradients
// Backward statistics in one pass over dy and x (both (N, C, S) views of one layout):
//   ds[n, s] = sum_c g[n, c] * dy * x      (g undefined: 1)        -- dL/dM_s
//   dg[n, c] = sum_s dy * x * s[n, s]       (s undefined: 1)        -- dL/dM_c
// Both accumulate in the opmath dtype and are returned in it.
std::vector<Tensor> grad_stats(const Tensor& dy3, const Tensor& x3, const c10::optional<Tensor>& g_opt,
                               const c10::optional<Tensor>& s_opt, bool want_ds, bool want_dg) {
  check3(x3, "x");
  check3(dy3, "dy");
  TORCH_CHECK(dy3.sizes() == x3.sizes() && dy3.strides() == x3.strides() && dy3.scalar_type() == x3.scalar_type(),
              "dy must have x's shape, layout and dtype");
  const int64_t n = x3.size(0), c = x3.size(1), s = x3.size(2);
  auto acc_dtype = at::toOpMathType(x3.scalar_type());
  const bool has_g = g_opt.has_value() && g_opt->defined();
  const bool has_s = s_opt.has_value() && s_opt->defined();
  if (has_g) TORCH_CHECK(g_opt->is_contiguous() && g_opt->numel() == n * c && g_opt->scalar_type() == acc_dtype,
                         "g must be a contiguous (N, C) tensor of the opmath dtype");
  if (has_s) TORCH_CHECK(s_opt->is_contiguous() && s_opt->numel() == n * s && s_opt->scalar_type() == acc_dtype,
                         "s must be a contiguous (N, S) tensor of the opmath dtype");
  const bool ncs = is_ncs(x3);
  const int64_t block = ncs ? 512 : 64;  // positions per task
  const int64_t nblocks = std::max<int64_t>(1, (s + block - 1) / block);
  Tensor ds = want_ds ? at::zeros({n, s}, x3.options().dtype(acc_dtype)) : Tensor();
  // per-task partial sums of dg, reduced at the end (tasks split S)
  Tensor dg_part = want_dg ? at::zeros({n, nblocks, c}, x3.options().dtype(acc_dtype)) : Tensor();
  if (x3.numel() == 0) return {ds, want_dg ? dg_part.sum(1) : Tensor()};
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x3.scalar_type(), "grad_stats", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const scalar_t* xp = x3.const_data_ptr<scalar_t>();
    const scalar_t* dp = dy3.const_data_ptr<scalar_t>();
    const acc_t* gp = has_g ? g_opt->const_data_ptr<acc_t>() : nullptr;
    const acc_t* sp = has_s ? s_opt->const_data_ptr<acc_t>() : nullptr;
    acc_t* dsp = want_ds ? ds.mutable_data_ptr<acc_t>() : nullptr;
    acc_t* dgp = want_dg ? dg_part.mutable_data_ptr<acc_t>() : nullptr;
    at::parallel_for(0, n * nblocks, std::max<int64_t>(1, kGrain / std::max<int64_t>(1, block * c)), [&](int64_t b, int64_t e) {
      std::vector<acc_t> dsl(block);
      for (int64_t t = b; t < e; ++t) {
        const int64_t i = t / nblocks, blk = t % nblocks, s0 = blk * block, sn = std::min(block, s - s0);
        acc_t* dgrow = dgp != nullptr ? dgp + (i * nblocks + blk) * c : nullptr;
        const acc_t* srow = sp != nullptr ? sp + i * s + s0 : nullptr;
        const acc_t* grow = gp != nullptr ? gp + i * c : nullptr;
        if (ncs) {
          for (int64_t k = 0; k < sn; ++k) dsl[k] = 0;
          acc_t* dq = dsl.data();
          for (int64_t ch = 0; ch < c; ++ch) {
            const scalar_t* xr = xp + (i * c + ch) * s + s0;
            const scalar_t* dr = dp + (i * c + ch) * s + s0;
            const acc_t gv = grow != nullptr ? grow[ch] : acc_t(1);
            acc_t dgsum = 0;
            if (srow != nullptr) {
              _Pragma("omp simd reduction(+ : dgsum)")
              for (int64_t k = 0; k < sn; ++k) {
                acc_t pr = to_acc(dr[k]) * to_acc(xr[k]);
                dq[k] += gv * pr;
                dgsum += pr * srow[k];
              }
            } else {
              _Pragma("omp simd reduction(+ : dgsum)")
              for (int64_t k = 0; k < sn; ++k) {
                acc_t pr = to_acc(dr[k]) * to_acc(xr[k]);
                dq[k] += gv * pr;
                dgsum += pr;
              }
            }
            if (dgrow != nullptr) dgrow[ch] = dgsum;
          }
          if (dsp != nullptr) for (int64_t k = 0; k < sn; ++k) dsp[i * s + s0 + k] = dsl[k];
        } else {
          for (int64_t k = 0; k < sn; ++k) {
            const int64_t j = s0 + k;
            const scalar_t* xr = xp + (i * s + j) * c;
            const scalar_t* dr = dp + (i * s + j) * c;
            const acc_t sv = srow != nullptr ? srow[k] : acc_t(1);
            acc_t dssum = 0;
            if (dgrow != nullptr) {
              _Pragma("omp simd reduction(+ : dssum)")
              for (int64_t ch = 0; ch < c; ++ch) {
                acc_t pr = to_acc(dr[ch]) * to_acc(xr[ch]);
                dssum += (grow != nullptr ? grow[ch] : acc_t(1)) * pr;
                dgrow[ch] += pr * sv;
              }
            } else {
              _Pragma("omp simd reduction(+ : dssum)")
              for (int64_t ch = 0; ch < c; ++ch) {
                acc_t pr = to_acc(dr[ch]) * to_acc(xr[ch]);
                dssum += (grow != nullptr ? grow[ch] : acc_t(1)) * pr;
              }
            }
            if (dsp != nullptr) dsp[i * s + j] = dssum;
          }
        }
      }
    });
  });
  // one block per sample (maps of up to 512 positions): the partial sums are the sums
  return {ds, want_dg ? (nblocks == 1 ? dg_part.view({n, c}) : dg_part.sum(1)) : Tensor()};
}

// The input gradient in one pass over dy (writes dx in x's layout):
//   dF'[n, c, s] = dy * s[n, s] + dmap_avg[n, s] / C + [c == idx_s[n, s]] * dmap_max[n, s]
//   dx[n, c, s]  = dF' * g[n, c] + dpool_avg[n, c] / S + [s == idx_c[n, c]] * dpool_max[n, c]
// Every term is optional (undefined tensors drop it; without s, dF' starts from dy).
// The small tensors are contiguous and of the opmath dtype; idx_* are int64.
Tensor grad_input(const Tensor& dy3, const c10::optional<Tensor>& s_opt, const c10::optional<Tensor>& dmap_avg_opt,
                  const c10::optional<Tensor>& dmap_max_opt, const c10::optional<Tensor>& idx_s_opt,
                  const c10::optional<Tensor>& g_opt, const c10::optional<Tensor>& dpool_avg_opt,
                  const c10::optional<Tensor>& dpool_max_opt, const c10::optional<Tensor>& idx_c_opt) {
  check3(dy3, "dy");
  const int64_t n = dy3.size(0), c = dy3.size(1), s = dy3.size(2);
  auto acc_dtype = at::toOpMathType(dy3.scalar_type());
  auto def = [](const c10::optional<Tensor>& t) { return t.has_value() && t->defined(); };
  auto small = [&](const c10::optional<Tensor>& t, int64_t numel, at::ScalarType dt, const char* name) {
    if (!def(t)) return;
    TORCH_CHECK(t->is_contiguous() && t->numel() == numel && t->scalar_type() == dt, name,
                " must be contiguous with ", numel, " elements of dtype ", dt);
  };
  small(s_opt, n * s, acc_dtype, "s");
  small(dmap_avg_opt, n * s, acc_dtype, "dmap_avg");
  small(dmap_max_opt, n * s, acc_dtype, "dmap_max");
  small(idx_s_opt, n * s, at::kLong, "idx_s");
  small(g_opt, n * c, acc_dtype, "g");
  small(dpool_avg_opt, n * c, acc_dtype, "dpool_avg");
  small(dpool_max_opt, n * c, acc_dtype, "dpool_max");
  small(idx_c_opt, n * c, at::kLong, "idx_c");
  TORCH_CHECK(def(dmap_max_opt) == def(idx_s_opt), "dmap_max and idx_s go together");
  TORCH_CHECK(def(dpool_max_opt) == def(idx_c_opt), "dpool_max and idx_c go together");
  Tensor dx = at::empty_strided(dy3.sizes(), dy3.strides(), dy3.options());
  if (dy3.numel() == 0) return dx;
  const bool ncs = is_ncs(dy3);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, dy3.scalar_type(), "grad_input", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const scalar_t* dp = dy3.const_data_ptr<scalar_t>();
    scalar_t* xp = dx.mutable_data_ptr<scalar_t>();
    auto ptr = [&](const c10::optional<Tensor>& t) { return def(t) ? t->const_data_ptr<acc_t>() : nullptr; };
    const acc_t* sp = ptr(s_opt);
    const acc_t* mavg = ptr(dmap_avg_opt);
    const acc_t* mmax = ptr(dmap_max_opt);
    const int64_t* is = def(idx_s_opt) ? idx_s_opt->const_data_ptr<int64_t>() : nullptr;
    const acc_t* gp = ptr(g_opt);
    const acc_t* pavg = ptr(dpool_avg_opt);
    const acc_t* pmax = ptr(dpool_max_opt);
    const int64_t* ic = def(idx_c_opt) ? idx_c_opt->const_data_ptr<int64_t>() : nullptr;
    const acc_t inv_c = acc_t(1) / static_cast<acc_t>(c), inv_s = acc_t(1) / static_cast<acc_t>(s);
    if (ncs) {
      // absent terms as rows of ones / zeros, so the loop has no branch and vectorises
      const std::vector<acc_t> ones(sp == nullptr ? s : 0, acc_t(1)), zeros(mavg == nullptr ? s : 0, acc_t(0));
      at::parallel_for(0, n * c, std::max<int64_t>(1, kGrain / std::max<int64_t>(s, 1)), [&](int64_t b, int64_t e) {
        for (int64_t r = b; r < e; ++r) {
          const int64_t i = r / c;
          const scalar_t* dr = dp + r * s;
          scalar_t* orow = xp + r * s;
          const acc_t gv = gp != nullptr ? gp[r] : acc_t(1);
          const acc_t base = pavg != nullptr ? pavg[r] * inv_s : acc_t(0);
          const acc_t* srow = sp != nullptr ? sp + i * s : ones.data();
          const acc_t* arow = mavg != nullptr ? mavg + i * s : zeros.data();
          _Pragma("omp simd")
          for (int64_t j = 0; j < s; ++j) {
            const acc_t d = to_acc(dr[j]) * srow[j] + arow[j] * inv_c;
            orow[j] = from_acc<scalar_t>(d * gv + base);
          }
          if (pmax != nullptr) {
            const int64_t j = ic[r];
            orow[j] = static_cast<scalar_t>(static_cast<acc_t>(orow[j]) + pmax[r]);
          }
        }
      });
      if (mmax != nullptr) {  // the channel max's share: one channel per position
        at::parallel_for(0, n, std::max<int64_t>(1, kGrain / std::max<int64_t>(s, 1)), [&](int64_t b, int64_t e) {
          for (int64_t i = b; i < e; ++i) {
            for (int64_t j = 0; j < s; ++j) {
              const int64_t ch = is[i * s + j];
              scalar_t* o = xp + (i * c + ch) * s + j;
              *o = static_cast<scalar_t>(static_cast<acc_t>(*o) + mmax[i * s + j] * (gp != nullptr ? gp[i * c + ch] : acc_t(1)));
            }
          }
        });
      }
    } else {
      at::parallel_for(0, n * s, std::max<int64_t>(1, kGrain / std::max<int64_t>(c, 1)), [&](int64_t b, int64_t e) {
        for (int64_t r = b; r < e; ++r) {
          const int64_t i = r / s, j = r % s;
          const scalar_t* dr = dp + r * c;
          scalar_t* orow = xp + r * c;
          const acc_t sv = sp != nullptr ? sp[r] : acc_t(1);
          const acc_t av = mavg != nullptr ? mavg[r] * inv_c : acc_t(0);
          const acc_t* grow = gp != nullptr ? gp + i * c : nullptr;
          const acc_t* brow = pavg != nullptr ? pavg + i * c : nullptr;
          _Pragma("omp simd")
          for (int64_t ch = 0; ch < c; ++ch) {
            acc_t d = to_acc(dr[ch]) * sv + av;
            orow[ch] = from_acc<scalar_t>(d * (grow != nullptr ? grow[ch] : acc_t(1)) +
                                             (brow != nullptr ? brow[ch] * inv_s : acc_t(0)));
          }
          if (mmax != nullptr) {  // the channel max's share at this position
            const int64_t ch = is[r];
            const acc_t gv = grow != nullptr ? grow[ch] : acc_t(1);
            orow[ch] = static_cast<scalar_t>(static_cast<acc_t>(orow[ch]) + mmax[r] * gv);
          }
        }
      });
      if (pmax != nullptr) {  // the global max's share: one position per (n, c)
        for (int64_t r = 0; r < n * c; ++r) {
          const int64_t i = r / c, ch = r % c;
          scalar_t* o = xp + (i * s + ic[r]) * c + ch;
          *o = static_cast<scalar_t>(static_cast<acc_t>(*o) + pmax[r]);
        }
      }
    }
  });
  return dx;
}


// ------------------------------------------------------------------------ activations
// The rows of excite.kernels.activations.ACTIVATIONS, for the whole-block kernels.
enum class Act { kRelu, kSilu, kGelu, kTanh, kSigmoid, kHardSigmoid, kIdentity };

Act parse_act(const std::string& name) {
  if (name == "relu") return Act::kRelu;
  if (name == "silu") return Act::kSilu;
  if (name == "gelu") return Act::kGelu;
  if (name == "tanh") return Act::kTanh;
  if (name == "sigmoid") return Act::kSigmoid;
  if (name == "hard_sigmoid") return Act::kHardSigmoid;
  if (name == "identity") return Act::kIdentity;
  TORCH_CHECK(false, "unknown activation ", name);
}

template <typename T>
__attribute__((always_inline)) inline T act_value(Act a, T h) {
  switch (a) {
    case Act::kRelu: return h < T(0) ? T(0) : h;  // NaN stays NaN, as torch.relu
    case Act::kSilu: return h / (T(1) + std::exp(-h));
    case Act::kGelu: return T(0.5) * h * (T(1) + std::erf(h * T(0.70710678118654752440)));
    case Act::kTanh: return std::tanh(h);
    case Act::kSigmoid: return T(1) / (T(1) + std::exp(-h));
    case Act::kHardSigmoid: {  // relu6(h + 3) / 6
      T v = h + T(3);
      v = v < T(0) ? T(0) : (v > T(6) ? T(6) : v);
      return v / T(6);
    }
    case Act::kIdentity: return h;
  }
  return h;
}

// v = act(v) over n values: long arrays through ATen's vectorised kernels (one call),
// short ones element by element with the switch outside the loop.
template <typename T>
void act_inplace(Act a, T* v, int64_t n) {
  if (a == Act::kIdentity || n == 0) return;
  if (n >= 4096) {
    Tensor t = at::from_blob(v, {n}, at::TensorOptions().dtype(c10::CppTypeToScalarType<T>::value));
    switch (a) {
      case Act::kRelu: at::relu_(t); break;
      case Act::kSilu: at::silu_(t); break;
      case Act::kGelu: at::gelu_(t); break;
      case Act::kTanh: at::tanh_(t); break;
      case Act::kSigmoid: at::sigmoid_(t); break;
      case Act::kHardSigmoid: at::hardsigmoid_(t); break;
      case Act::kIdentity: break;
    }
    return;
  }
  switch (a) {
    case Act::kRelu: for (int64_t i = 0; i < n; ++i) v[i] = act_value(Act::kRelu, v[i]); break;
    case Act::kSilu: for (int64_t i = 0; i < n; ++i) v[i] = act_value(Act::kSilu, v[i]); break;
    case Act::kGelu: for (int64_t i = 0; i < n; ++i) v[i] = act_value(Act::kGelu, v[i]); break;
    case Act::kTanh: for (int64_t i = 0; i < n; ++i) v[i] = act_value(Act::kTanh, v[i]); break;
    case Act::kSigmoid: for (int64_t i = 0; i < n; ++i) v[i] = act_value(Act::kSigmoid, v[i]); break;
    case Act::kHardSigmoid: for (int64_t i = 0; i < n; ++i) v[i] = act_value(Act::kHardSigmoid, v[i]); break;
    case Act::kIdentity: break;
  }
}

// ------------------------------------------------------------ the 'same' convolution
// Stride-1 convolution with odd kernels and zero 'same' padding, for every rank through
// one (T, H, W) loop nest (1D: T = H = 1; 2D: T = 1):
//   out[n, o, t, h, w] = sum_i sum_{a,b,c} w[o, i, a, b, c] * in[n, i, t+a-kt/2, h+b-kh/2, w+c-kw/2]
// CBAM's 2->1 map convolution is a few multiply-adds per position; a direct loop with a
// vectorised innermost axis beats a oneDNN call on it at every size measured.
struct Geometry {
  int64_t t, h, w, kt, kh, kw;
  int64_t s() const { return t * h * w; }
  int64_t taps() const { return kt * kh * kw; }
};

Geometry geometry(c10::IntArrayRef spatial, c10::IntArrayRef kernel) {
  TORCH_CHECK(spatial.size() >= 1 && spatial.size() <= 3 && spatial.size() == kernel.size(),
              "spatial and kernel sizes must have 1-3 matching dims");
  int64_t sz[3] = {1, 1, 1}, k[3] = {1, 1, 1};
  const size_t off = 3 - spatial.size();
  for (size_t i = 0; i < spatial.size(); ++i) {
    sz[off + i] = spatial[i];
    k[off + i] = kernel[i];
    TORCH_CHECK(kernel[i] % 2 == 1, "kernel sizes must be odd");
  }
  return {sz[0], sz[1], sz[2], k[0], k[1], k[2]};
}

// The taps that can reach the map: along an axis of n positions, a tap more than n - 1
// away from the centre only ever reads zero padding, so a kernel wider than 2n - 1 is cut
// to its middle 2n - 1 taps (exactly the same sums: 7x7 on a 1x1 map is its centre tap).
// `g` is the cut geometry, `ot/oh/ow` the first kept tap along each axis of the full kernel.
struct Crop {
  Geometry g;
  int64_t ot, oh, ow;
  int64_t full_taps;
  // index in the full kernel of cut tap (a, b, c)
  int64_t full(int64_t a, int64_t b, int64_t c, const Geometry& f) const {
    return ((a + ot) * f.kh + (b + oh)) * f.kw + (c + ow);
  }
};

Crop crop(const Geometry& f) {
  auto keep = [](int64_t k, int64_t n) { return std::min(k, 2 * n - 1); };
  const Geometry g{f.t, f.h, f.w, keep(f.kt, f.t), keep(f.kh, f.h), keep(f.kw, f.w)};
  return {g, (f.kt - g.kt) / 2, (f.kh - g.kh) / 2, (f.kw - g.kw) / 2, f.taps()};
}

// in (N, cin, S), w (cout, cin, taps), out (N, cout, S); flip: use w[i, o, reversed taps]
// instead (the input gradient: a correlation with the flipped kernel). The input is copied
// once into zero-padded planes, so every tap is one pass over a contiguous stretch of a
// plane (rows at the padded pitch; the few columns between rows are computed and dropped):
// long vectorised loops with no bounds, even for maps a few pixels wide.
struct Padded {
  int64_t tp, hp, wp, plane, len;  // padded sizes, plane = hp * wp, len = outputs' stretch
};

Padded padded(const Geometry& g) {
  const int64_t tp = g.t + g.kt - 1, hp = g.h + g.kh - 1, wp = g.w + g.kw - 1;
  return {tp, hp, wp, hp * wp, (g.h - 1) * wp + g.w};
}

// (N*C, T, H, W) -> zero-padded (N*C, Tp, Hp, Wp)
template <typename T>
std::vector<T> pad_planes(const T* in, int64_t nc, const Geometry& g, const Padded& p) {
  std::vector<T> out(nc * p.tp * p.plane, T(0));
  const int64_t rows = nc * g.t * g.h;
  at::parallel_for(0, rows, std::max<int64_t>(1, kGrain / std::max<int64_t>(1, g.w)), [&](int64_t b, int64_t e) {
    for (int64_t r = b; r < e; ++r) {
      const int64_t hh = r % g.h, tt = (r / g.h) % g.t, q = r / (g.h * g.t);
      T* dst = out.data() + (q * p.tp + tt + g.kt / 2) * p.plane + (hh + g.kh / 2) * p.wp + g.kw / 2;
      std::copy(in + r * g.w, in + (r + 1) * g.w, dst);
    }
  });
  return out;
}

// ap[j] = sum_q w[q] * base[offset[q] + j] for j < len: every tap of one output plane.
template <typename T>
void conv_taps(const T* base, const int64_t* offset, const T* w, int64_t k, T* ap, int64_t len) {
  std::fill(ap, ap + len, T(0));
  for (int64_t q = 0; q < k; ++q) {
    const T wv = w[q];
    const T* src = base + offset[q];
    _Pragma("omp simd")
    for (int64_t j = 0; j < len; ++j) ap[j] += wv * src[j];
  }
}

#if defined(__AVX2__) && defined(__FMA__)
// float with AVX2/FMA: 32 outputs in four registers across all taps, one load per
// multiply-add (the generic loop loads and stores the accumulator for every tap)
template <>
void conv_taps<float>(const float* base, const int64_t* offset, const float* w, int64_t k, float* ap, int64_t len) {
  int64_t j0 = 0;
  for (; j0 + 32 <= len; j0 += 32) {
    __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps(), a2 = _mm256_setzero_ps(), a3 = _mm256_setzero_ps();
    for (int64_t q = 0; q < k; ++q) {
      const __m256 wv = _mm256_set1_ps(w[q]);
      const float* src = base + offset[q] + j0;
      a0 = _mm256_fmadd_ps(wv, _mm256_loadu_ps(src), a0);
      a1 = _mm256_fmadd_ps(wv, _mm256_loadu_ps(src + 8), a1);
      a2 = _mm256_fmadd_ps(wv, _mm256_loadu_ps(src + 16), a2);
      a3 = _mm256_fmadd_ps(wv, _mm256_loadu_ps(src + 24), a3);
    }
    _mm256_storeu_ps(ap + j0, a0);
    _mm256_storeu_ps(ap + j0 + 8, a1);
    _mm256_storeu_ps(ap + j0 + 16, a2);
    _mm256_storeu_ps(ap + j0 + 24, a3);
  }
  if (j0 < len) {  // the last 1-31 outputs the same way, masked: nothing read or written past them
    const int64_t r = len - j0;
    const __m256i m0 = tail_mask(r), m1 = tail_mask(r - 8), m2 = tail_mask(r - 16), m3 = tail_mask(r - 24);
    __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps(), a2 = _mm256_setzero_ps(), a3 = _mm256_setzero_ps();
    for (int64_t q = 0; q < k; ++q) {
      const __m256 wv = _mm256_set1_ps(w[q]);
      const float* src = base + offset[q] + j0;
      a0 = _mm256_fmadd_ps(wv, _mm256_maskload_ps(src, m0), a0);
      a1 = _mm256_fmadd_ps(wv, _mm256_maskload_ps(src + 8, m1), a1);
      a2 = _mm256_fmadd_ps(wv, _mm256_maskload_ps(src + 16, m2), a2);
      a3 = _mm256_fmadd_ps(wv, _mm256_maskload_ps(src + 24, m3), a3);
    }
    _mm256_maskstore_ps(ap + j0, m0, a0);
    _mm256_maskstore_ps(ap + j0 + 8, m1, a1);
    _mm256_maskstore_ps(ap + j0 + 16, m2, a2);
    _mm256_maskstore_ps(ap + j0 + 24, m3, a3);
  }
}
#endif

template <typename T>
void conv_same_loop(const T* in, const T* w, T* out, int64_t n, int64_t cin, int64_t cout,
                    const Geometry& full, bool flip) {
  const Crop cut = crop(full);
  const Geometry& g = cut.g;
  const Padded p = padded(g);
  const std::vector<T> pad = pad_planes(in, n * cin, g, p);
  const int64_t taps = g.taps(), ftaps = cut.full_taps;
  const int64_t work = std::max<int64_t>(1, cin * taps * p.len);
  // every (input channel, tap) as a weight and an offset into the padded planes of a sample
  std::vector<T> wt(cout * cin * taps);
  std::vector<int64_t> offset(cin * taps);
  for (int64_t ci = 0; ci < cin; ++ci) {
    for (int64_t tap = 0; tap < taps; ++tap) {
      const int64_t c = tap % g.kw, bb = (tap / g.kw) % g.kh, a = tap / (g.kw * g.kh);
      const int64_t ft = cut.full(a, bb, c, full);
      offset[ci * taps + tap] = (ci * p.tp + a) * p.plane + bb * p.wp + c;
      for (int64_t o = 0; o < cout; ++o) {
        wt[(o * cin + ci) * taps + tap] = flip ? w[(ci * cout + o) * ftaps + ftaps - 1 - ft] : w[(o * cin + ci) * ftaps + ft];
      }
    }
  }
  const int64_t k = cin * taps;
  at::parallel_for(0, n * cout * g.t, std::max<int64_t>(1, kGrain / work), [&](int64_t b, int64_t e) {
    std::vector<T> acc(p.len);
    for (int64_t r = b; r < e; ++r) {
      const int64_t tt = r % g.t, o = (r / g.t) % cout, i0 = r / (g.t * cout);
      const T* base = pad.data() + (i0 * cin * p.tp + tt) * p.plane;
      const T* wo = wt.data() + o * k;
      T* ap = acc.data();
      conv_taps(base, offset.data(), wo, k, ap, p.len);
      T* orow = out + r * g.h * g.w;
      for (int64_t hh = 0; hh < g.h; ++hh) std::copy(ap + hh * p.wp, ap + hh * p.wp + g.w, orow + hh * g.w);
    }
  });
}

// out[c] = sum_q sum_j g_q[j] * src_q[j + c] for c < kw, j < len, over m planes q: kw
// neighbouring taps of the weight gradient.
template <typename T>
void dot_shifts(const T* const* gs, const T* const* srcs, int64_t m, int64_t len, int64_t kw, T* out) {
  for (int64_t c = 0; c < kw; ++c) {
    T sum = 0;
    for (int64_t q = 0; q < m; ++q) {
      const T* g = gs[q];
      const T* src = srcs[q] + c;
      _Pragma("omp simd reduction(+ : sum)")
      for (int64_t j = 0; j < len; ++j) sum += g[j] * src[j];
    }
    out[c] = sum;
  }
}

#if defined(__AVX2__) && defined(__FMA__)
// KC taps (KC <= 8, a compile-time count so the sums stay in registers) from offset c0
template <int KC>
void dot_shifts_avx2(const float* const* gs, const float* const* srcs, int64_t m, int64_t len, int64_t c0, float* out) {
  const int64_t body = len - len % 8;
  const __m256i mask = tail_mask(len - body);
  __m256 acc[KC];
  for (int c = 0; c < KC; ++c) acc[c] = _mm256_setzero_ps();
  for (int64_t q = 0; q < m; ++q) {
    const float* g = gs[q];
    const float* src = srcs[q] + c0;
    for (int64_t j = 0; j < body; j += 8) {
      const __m256 gv = _mm256_loadu_ps(g + j);
      for (int c = 0; c < KC; ++c) acc[c] = _mm256_fmadd_ps(gv, _mm256_loadu_ps(src + j + c), acc[c]);
    }
    if (body < len) {
      const __m256 gv = _mm256_maskload_ps(g + body, mask);
      for (int c = 0; c < KC; ++c) acc[c] = _mm256_fmadd_ps(gv, _mm256_maskload_ps(src + body + c, mask), acc[c]);
    }
  }
  for (int c = 0; c < KC; ++c) out[c0 + c] = hsum(acc[c]);
}

// float with AVX2/FMA, up to 8 taps at a time: each gradient vector is loaded once for all
// of them, the sums stay in registers across the planes (one horizontal sum per tap)
template <>
void dot_shifts<float>(const float* const* gs, const float* const* srcs, int64_t m, int64_t len, int64_t kw, float* out) {
  for (int64_t c0 = 0; c0 < kw; c0 += 8) {
    switch (std::min<int64_t>(8, kw - c0)) {
      case 1: dot_shifts_avx2<1>(gs, srcs, m, len, c0, out); break;
      case 2: dot_shifts_avx2<2>(gs, srcs, m, len, c0, out); break;
      case 3: dot_shifts_avx2<3>(gs, srcs, m, len, c0, out); break;
      case 4: dot_shifts_avx2<4>(gs, srcs, m, len, c0, out); break;
      case 5: dot_shifts_avx2<5>(gs, srcs, m, len, c0, out); break;
      case 6: dot_shifts_avx2<6>(gs, srcs, m, len, c0, out); break;
      case 7: dot_shifts_avx2<7>(gs, srcs, m, len, c0, out); break;
      default: dot_shifts_avx2<8>(gs, srcs, m, len, c0, out); break;
    }
  }
}
#endif

// dw[o, i, a, b, c] = sum_n sum_pos grad[n, o, pos] * in[n, i, pos + tap - pad]; grad and in
// as in conv_same_loop (dw (cout, cin, taps) is overwritten; taps that reach no position
// of the map (see crop) are zero)
template <typename T>
void conv_same_weight_grad_loop(const T* in, const T* grad, T* dw, int64_t n, int64_t cin, int64_t cout,
                                const Geometry& full) {
  const Crop cut = crop(full);
  const Geometry& g = cut.g;
  const Padded p = padded(g);
  std::fill(dw, dw + cout * cin * cut.full_taps, T(0));
  const std::vector<T> pad = pad_planes(in, n * cin, g, p);
  // the gradient at the padded pitch, zero in the columns between rows
  std::vector<T> gp(n * cout * g.t * p.len, T(0));
  for (int64_t r = 0; r < n * cout * g.t * g.h; ++r) {
    const int64_t hh = r % g.h, q = r / g.h;
    std::copy(grad + r * g.w, grad + (r + 1) * g.w, gp.data() + q * p.len + hh * p.wp);
  }
  const int64_t rows = cout * cin * g.kt * g.kh;  // one task: the kw taps of one (o, i, a, b)
  const int64_t planes = n * g.t;
  at::parallel_for(0, rows, std::max<int64_t>(1, kGrain / std::max<int64_t>(1, planes * p.len * g.kw)),
                   [&](int64_t b, int64_t e) {
    std::vector<T> total(g.kw);
    std::vector<const T*> gs(planes), srcs(planes);
    for (int64_t task = b; task < e; ++task) {
      const int64_t bb = task % g.kh, a = (task / g.kh) % g.kt, ci = (task / (g.kh * g.kt)) % cin,
                    o = task / (g.kh * g.kt * cin);
      for (int64_t i0 = 0; i0 < n; ++i0) {
        for (int64_t tt = 0; tt < g.t; ++tt) {
          gs[i0 * g.t + tt] = gp.data() + ((i0 * cout + o) * g.t + tt) * p.len;
          srcs[i0 * g.t + tt] = pad.data() + ((i0 * cin + ci) * p.tp + tt + a) * p.plane + bb * p.wp;
        }
      }
      dot_shifts(gs.data(), srcs.data(), planes, p.len, g.kw, total.data());
      T* row = dw + (o * cin + ci) * cut.full_taps;
      for (int64_t c = 0; c < g.kw; ++c) row[cut.full(a, bb, c, full)] = total[c];
    }
  });
}

// forward: maps (N, P, *spatial) and weight (1, P, *k) of one floating dtype -> (N, 1, *spatial)
Tensor conv_same(const Tensor& maps, const Tensor& weight) {
  TORCH_CHECK(maps.dim() >= 3 && maps.dim() <= 5 && weight.dim() == maps.dim() && weight.size(1) == maps.size(1),
              "maps (N, P, *spatial) and weight (O, P, *k) of the same rank");
  auto in = maps.contiguous();
  auto w = weight.to(maps.scalar_type()).contiguous();
  const Geometry g = geometry(maps.sizes().slice(2), weight.sizes().slice(2));
  std::vector<int64_t> shape(maps.sizes().begin(), maps.sizes().end());
  shape[1] = weight.size(0);
  Tensor out = at::empty(shape, maps.options());
  if (out.numel() == 0) return out;
  AT_DISPATCH_FLOATING_TYPES(maps.scalar_type(), "conv_same", [&] {
    conv_same_loop<scalar_t>(in.const_data_ptr<scalar_t>(), w.const_data_ptr<scalar_t>(),
                             out.mutable_data_ptr<scalar_t>(), maps.size(0), maps.size(1), weight.size(0), g, false);
  });
  return out;
}

// input gradient: grad (N, O, *spatial), weight (O, P, *k) -> (N, P, *spatial)
Tensor conv_same_input_grad(const Tensor& grad, const Tensor& weight) {
  TORCH_CHECK(grad.dim() == weight.dim() && grad.size(1) == weight.size(0), "grad (N, O, *spatial), weight (O, P, *k)");
  auto in = grad.contiguous();
  auto w = weight.to(grad.scalar_type()).contiguous();
  const Geometry g = geometry(grad.sizes().slice(2), weight.sizes().slice(2));
  std::vector<int64_t> shape(grad.sizes().begin(), grad.sizes().end());
  shape[1] = weight.size(1);
  Tensor out = at::empty(shape, grad.options());
  if (out.numel() == 0) return out;
  AT_DISPATCH_FLOATING_TYPES(grad.scalar_type(), "conv_same_input_grad", [&] {
    conv_same_loop<scalar_t>(in.const_data_ptr<scalar_t>(), w.const_data_ptr<scalar_t>(),
                             out.mutable_data_ptr<scalar_t>(), grad.size(0), weight.size(0), weight.size(1), g, true);
  });
  return out;
}

// weight gradient: maps (N, P, *spatial), grad (N, O, *spatial) -> (O, P, *k)
//   dw[o, i, tap] = sum_n sum_pos grad[n, o, pos] * maps[n, i, pos + tap - pad]
Tensor conv_same_weight_grad(const Tensor& maps, const Tensor& grad, c10::IntArrayRef kernel) {
  TORCH_CHECK(maps.dim() == grad.dim() && maps.size(0) == grad.size(0) && maps.sizes().slice(2) == grad.sizes().slice(2),
              "maps (N, P, *spatial) and grad (N, O, *spatial)");
  auto in = maps.contiguous();
  auto gr = grad.to(maps.scalar_type()).contiguous();
  const int64_t n = maps.size(0), cin = maps.size(1), cout = grad.size(1);
  const Geometry g = geometry(maps.sizes().slice(2), kernel);
  std::vector<int64_t> shape = {cout, cin};
  shape.insert(shape.end(), kernel.begin(), kernel.end());
  Tensor dw = at::zeros(shape, maps.options());
  if (maps.numel() == 0) return dw;
  AT_DISPATCH_FLOATING_TYPES(maps.scalar_type(), "conv_same_weight_grad", [&] {
    conv_same_weight_grad_loop<scalar_t>(in.const_data_ptr<scalar_t>(), gr.const_data_ptr<scalar_t>(),
                                         dw.mutable_data_ptr<scalar_t>(), n, cin, cout, g);
  });
  return dw;
}

// ------------------------------------------------------------------ the channel MLP
// The channel MLP's products are a few hundred multiply-adds in the smallest blocks: loops
// skip ATen's per-call cost (3-6 us) there. Beyond these many multiply-adds a BLAS (at::mm)
// is faster (measured on the 2-core VM): the dot-product loops of gemm_nt keep up to
// 2^17, the row updates of mm_nn (the backward's products) only to 2^13.
constexpr int64_t kSmallDots = int64_t(1) << 17;
constexpr int64_t kSmallProduct = int64_t(1) << 13;

// out (m, n) = a (m, k) @ b (n, k)^T, raw contiguous buffers: at::mm beyond kSmallDots;
// for small products dot products over k when k is long, otherwise rows of out updated
// from a transposed copy of b (a vectorised reduction over a handful of elements costs more
// than it computes).
template <typename T>
void gemm_nt(const T* a, const T* b, T* out, int64_t m, int64_t n, int64_t k) {
  if (m * n * k > kSmallDots) {  // a BLAS, writing into out
    const auto opts = at::TensorOptions().dtype(c10::CppTypeToScalarType<T>::value);
    Tensor o = at::from_blob(out, {m, n}, opts);
    at::mm_out(o, at::from_blob(const_cast<T*>(a), {m, k}, opts), at::from_blob(const_cast<T*>(b), {n, k}, opts).t());
    return;
  }
  if (k >= 32) {
    at::parallel_for(0, n, std::max<int64_t>(1, kGrain / std::max<int64_t>(1, m * k)), [&](int64_t jb, int64_t je) {
      for (int64_t j = jb; j < je; ++j) {
        const T* br = b + j * k;
        for (int64_t i = 0; i < m; ++i) {
          const T* ar = a + i * k;
          T sum = 0;
          _Pragma("omp simd reduction(+ : sum)")
          for (int64_t q = 0; q < k; ++q) sum += ar[q] * br[q];
          out[i * n + j] = sum;
        }
      }
    });
    return;
  }
  std::vector<T> bt(k * n);
  for (int64_t j = 0; j < n; ++j)
    for (int64_t q = 0; q < k; ++q) bt[q * n + j] = b[j * k + q];
  for (int64_t i = 0; i < m; ++i) {
    T* orow = out + i * n;
    std::fill(orow, orow + n, T(0));
    for (int64_t q = 0; q < k; ++q) {
      const T av = a[i * k + q];
      const T* br = bt.data() + q * n;
      _Pragma("omp simd")
      for (int64_t j = 0; j < n; ++j) orow[j] += av * br[j];
    }
  }
}

// logits[n, c] = sum_p (b2[c] + sum_j w2[c, j] act(b1[j] + sum_k w1[j, k] pooled[p, n, k]))
// for pooled (P, N, C), all of one floating dtype T and contiguous (b1, b2 may be null).
// The second layer is linear, so it runs once on sum_p act(h_p).
template <typename T>
void mlp_logits_kernel(const T* zp, int64_t p, int64_t n, int64_t c, int64_t hid, const T* w1p,
                       const T* b1p, const T* w2p, const T* b2p, Act act, T* lp) {
  std::vector<T> h(p * n * hid), hsum(n * hid, T(0));  // pre-activations, sum_p act(h_p)
  gemm_nt(zp, w1p, h.data(), p * n, hid, c);
  if (b1p != nullptr)
    for (int64_t r = 0; r < p * n; ++r)
      for (int64_t j = 0; j < hid; ++j) h[r * hid + j] += b1p[j];
  act_inplace(act, h.data(), p * n * hid);
  for (int64_t q = 0; q < p; ++q)
    for (int64_t i = 0; i < n * hid; ++i) hsum[i] += h[q * n * hid + i];
  gemm_nt(hsum.data(), w2p, lp, n, c, hid);
  if (b2p != nullptr)
    for (int64_t i = 0; i < n; ++i)
      for (int64_t k = 0; k < c; ++k) lp[i * c + k] += static_cast<T>(p) * b2p[k];
}

// -------------------------------------------------------------- a whole block, inference
// The (N, C, S) view of x without a copy when x is contiguous or channels-last, else of a
// contiguous copy (excite.kernels.ops.ncs); `copied` says which.
Tensor ncs_view(const Tensor& x, bool& copied) {
  const int64_t n = x.size(0), c = x.size(1);
  int64_t s = 1;
  for (int64_t d = 2; d < x.dim(); ++d) s *= x.size(d);
  copied = false;
  if (x.is_contiguous()) return x.view({n, c, s});
  std::vector<int64_t> perm = {0};
  for (int64_t d = 2; d < x.dim(); ++d) perm.push_back(d);
  perm.push_back(1);
  Tensor xp = x.permute(perm);
  if (xp.is_contiguous()) return xp.reshape({n, s, c}).transpose(1, 2);
  copied = true;
  return x.contiguous().view({n, c, s});
}

// A fresh output for x laid out as its (N, C, S) view x3 = ncs_view(x, copied) (x's strides,
// or contiguous where that view is a copy), and the output's own (N, C, S) view.
std::pair<Tensor, Tensor> output_like(const Tensor& x, bool copied) {
  Tensor out = copied ? at::empty(x.sizes(), x.options()) : at::empty_strided(x.sizes(), x.strides(), x.options());
  bool out_copied = false;
  Tensor out3 = ncs_view(out, out_copied);
  return {out, out3};
}

// A small tensor (weights, biases) as a contiguous tensor of dtype dt, without a copy when it is one.
Tensor as_small(const c10::optional<Tensor>& t, at::ScalarType dt) {
  if (!t.has_value() || !t->defined()) return Tensor();
  if (t->scalar_type() == dt && t->is_contiguous()) return *t;
  return t->to(dt).contiguous();
}

template <typename T>
const T* ptr_or_null(const Tensor& t) { return t.defined() ? t.const_data_ptr<T>() : nullptr; }

double scalar_of(const c10::optional<Tensor>& t, double fallback) {
  if (!t.has_value() || !t->defined()) return fallback;
  TORCH_CHECK(t->numel() == 1 && t->device().is_cpu(), "scale and shift must be 1-element CPU tensors");
  double v = 0;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, t->scalar_type(), "scalar_of", [&] {
    v = static_cast<double>(t->const_data_ptr<scalar_t>()[0]);
  });
  return v;
}

// Which parts a block has and how its pools and maps are ordered, resolved once per call.
struct BlockSpec {
  bool channel, spatial;
  int64_t pc, ps;               // descriptors of the channel MLP, maps of the spatial conv
  int64_t avg_slot, max_slot;   // the spatial maps' order
  Act act, gate;
};

BlockSpec block_spec(bool has_channel, bool channel_avg, bool channel_max, const std::string& act,
                     bool has_spatial, bool avg_first, bool spatial_avg, bool spatial_max, const std::string& gate) {
  BlockSpec b;
  b.channel = has_channel;
  b.spatial = has_spatial;
  b.pc = static_cast<int64_t>(channel_avg) + static_cast<int64_t>(channel_max);
  b.ps = static_cast<int64_t>(spatial_avg) + static_cast<int64_t>(spatial_max);
  b.avg_slot = spatial_avg ? (avg_first || !spatial_max ? 0 : 1) : -1;
  b.max_slot = spatial_max ? (spatial_avg ? 1 - b.avg_slot : 0) : -1;
  b.act = has_channel ? parse_act(act) : Act::kIdentity;
  b.gate = parse_act(gate);
  TORCH_CHECK(!has_channel || b.pc > 0, "the channel gate needs a pool");
  TORCH_CHECK(!has_spatial || b.ps > 0, "the spatial gate needs a map");
  return b;
}

// y = x * g * s without autograd, in one call; x is (N, C, *spatial), returned y is a
// fresh tensor laid out as x (contiguous or channels-last; other strides: contiguous):
//   channel part (w1 given):     g = gate(sum_p MLP(pool_p(x)))             (N, C)
//   spatial part (weight given): s = gate(scale * conv([pools over C of x * g]) + shift)  (N, S)
// SE / M_c: no weight; M_s: no w1; CBAM (channel then spatial): both. The small tensors
// are computed in the opmath dtype (float for half inputs) in plain buffers; g and s are
// rounded to x's dtype before the products, as the autograd paths do.
Tensor block_forward(const Tensor& x, const c10::optional<Tensor>& w1_, const c10::optional<Tensor>& b1_,
                     const c10::optional<Tensor>& w2_, const c10::optional<Tensor>& b2_,
                     bool channel_avg, bool channel_max, const std::string& act,
                     const c10::optional<Tensor>& weight_, const c10::optional<Tensor>& scale,
                     const c10::optional<Tensor>& shift, bool avg_first, bool spatial_avg, bool spatial_max,
                     const std::string& gate, const c10::optional<Tensor>& residual) {
  TORCH_CHECK(x.dim() >= 3 && x.dim() <= 5 && x.device().is_cpu(), "x must be an (N, C, *spatial) CPU tensor");
  c10::impl::ExcludeDispatchKeyGuard no_autocast(c10::autocast_dispatch_keyset);  // the block picks its dtype
  bool copied = false;
  Tensor x3 = ncs_view(x, copied);
  Tensor r3;  // relu(y + residual) instead of y: the end of a residual block, in the same pass
  if (residual.has_value() && residual->defined()) {
    bool r_copied = false;
    r3 = ncs_view(*residual, r_copied);
    TORCH_CHECK(!copied && r3.sizes() == x3.sizes() && r3.strides() == x3.strides() &&
                    r3.scalar_type() == x3.scalar_type(),
                "residual must have x's shape, dtype and layout (contiguous or channels_last)");
  }
  auto [out, out3] = output_like(x, copied);
  const int64_t n = x3.size(0), c = x3.size(1), s = x3.size(2);
  if (x3.numel() == 0) return out;
  const auto acc = at::toOpMathType(x3.scalar_type());
  const BlockSpec spec = block_spec(w1_.has_value() && w1_->defined(), channel_avg, channel_max, act,
                                    weight_.has_value() && weight_->defined(), avg_first, spatial_avg, spatial_max, gate);
  const bool ncs = is_ncs(x3);
  Tensor w1 = as_small(w1_, acc), b1 = as_small(b1_, acc), w2 = as_small(w2_, acc), b2 = as_small(b2_, acc);
  Tensor weight = as_small(weight_, acc);
  const double a = scalar_of(scale, 1.0), b = scalar_of(shift, 0.0);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x3.scalar_type(), "block_forward", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const scalar_t* xp = x3.const_data_ptr<scalar_t>();
    std::vector<scalar_t> g;  // (N, C) in x's dtype; empty: 1
    if (spec.channel) {
      const int64_t p = spec.pc, hid = w1.size(0);
      std::vector<acc_t> pooled(p * n * c), logits(n * c);
      global_pools_kernel<scalar_t, acc_t>(xp, n, c, s, ncs, channel_avg ? pooled.data() : nullptr,
                                           channel_max ? pooled.data() + (p - 1) * n * c : nullptr, nullptr);
      mlp_logits_kernel<acc_t>(pooled.data(), p, n, c, hid, w1.const_data_ptr<acc_t>(), ptr_or_null<acc_t>(b1),
                               w2.const_data_ptr<acc_t>(), ptr_or_null<acc_t>(b2), spec.act, logits.data());
      g.resize(n * c);
      act_inplace(spec.gate, logits.data(), n * c);
      for (int64_t i = 0; i < n * c; ++i) g[i] = from_acc<scalar_t>(logits[i]);
    }
    std::vector<scalar_t> sx;  // (N, S) in x's dtype; empty: 1
    if (spec.spatial) {
      const int64_t p = spec.ps, avg_slot = spec.avg_slot, max_slot = spec.max_slot;
      TORCH_CHECK(weight.size(1) == p && weight.size(0) == 1, "weight must be (1, P, *k) for P maps");
      std::vector<acc_t> maps(n * p * s), pre(n * s);
      // the maps are rounded to x's dtype, as the autograd paths keep them
      std::vector<scalar_t> maps_x(std::is_same<scalar_t, acc_t>::value ? 0 : n * p * s);
      if (maps_x.empty()) {
        gated_channel_pools_kernel<scalar_t, acc_t>(xp, g.empty() ? nullptr : g.data(), n, c, s, ncs, p, avg_slot,
                                                    max_slot, maps.data(), nullptr);
      } else {
        gated_channel_pools_kernel<scalar_t, scalar_t>(xp, g.empty() ? nullptr : g.data(), n, c, s, ncs, p,
                                                       avg_slot, max_slot, maps_x.data(), nullptr);
        for (int64_t i = 0; i < n * p * s; ++i) maps[i] = static_cast<acc_t>(maps_x[i]);
      }
      const Geometry geo = geometry(x.sizes().slice(2), weight.sizes().slice(2));
      conv_same_loop<acc_t>(maps.data(), weight.const_data_ptr<acc_t>(), pre.data(), n, p, 1, geo, false);
      sx.resize(n * s);
      const acc_t av = static_cast<acc_t>(a), bv = static_cast<acc_t>(b);
      if (av != acc_t(1) || bv != acc_t(0))
        for (int64_t i = 0; i < n * s; ++i) pre[i] = pre[i] * av + bv;
      act_inplace(spec.gate, pre.data(), n * s);
      for (int64_t i = 0; i < n * s; ++i) sx[i] = from_acc<scalar_t>(pre[i]);
    }
    apply_kernel<scalar_t>(xp, g.empty() ? nullptr : g.data(), sx.empty() ? nullptr : sx.data(),
                           out3.mutable_data_ptr<scalar_t>(), n, c, s, ncs,
                           r3.defined() ? r3.const_data_ptr<scalar_t>() : nullptr);
  });
  return out;
}

// ------------------------------------------------------ small matrix products, training
// a @ b^T: a (m, k), b (n, k) -> (m, n)
Tensor mm_nt(const Tensor& a, const Tensor& b) {
  const int64_t m = a.size(0), k = a.size(1), n = b.size(0);
  Tensor out = at::empty({m, n}, a.options());
  AT_DISPATCH_FLOATING_TYPES(a.scalar_type(), "mm_nt", [&] {
    gemm_nt(a.const_data_ptr<scalar_t>(), b.const_data_ptr<scalar_t>(), out.mutable_data_ptr<scalar_t>(), m, n, k);
  });
  return out;
}

// a @ b: a (m, k) of any strides (a transposed view too), b (k, n) contiguous -> (m, n)
Tensor mm_nn(const Tensor& a, const Tensor& b) {
  const int64_t m = a.size(0), k = a.size(1), n = b.size(1);
  if (m * n * k > kSmallProduct) return at::mm(a, b);
  const int64_t si = a.stride(0), sq = a.stride(1);
  Tensor out = at::zeros({m, n}, a.options());
  AT_DISPATCH_FLOATING_TYPES(a.scalar_type(), "mm_nn", [&] {
    const scalar_t* ap = a.const_data_ptr<scalar_t>();
    const scalar_t* bp = b.const_data_ptr<scalar_t>();
    scalar_t* op = out.mutable_data_ptr<scalar_t>();
    for (int64_t i = 0; i < m; ++i) {
      for (int64_t q = 0; q < k; ++q) {
        const scalar_t av = ap[i * si + q * sq];
        _Pragma("omp simd")
        for (int64_t j = 0; j < n; ++j) op[i * n + j] += av * bp[q * n + j];
      }
    }
  });
  return out;
}

// scale * the column sums of a (r, m) -> (m)
Tensor col_sum(const Tensor& a, double scale) {
  const int64_t r = a.size(0), m = a.size(1);
  Tensor out = at::zeros({m}, a.options());
  AT_DISPATCH_FLOATING_TYPES(a.scalar_type(), "col_sum", [&] {
    const scalar_t* ap = a.const_data_ptr<scalar_t>();
    scalar_t* op = out.mutable_data_ptr<scalar_t>();
    for (int64_t q = 0; q < r; ++q) {
      _Pragma("omp simd")
      for (int64_t i = 0; i < m; ++i) op[i] += ap[q * m + i];
    }
    const scalar_t f = static_cast<scalar_t>(scale);
    for (int64_t i = 0; i < m; ++i) op[i] *= f;
  });
  return out;
}

// ------------------------------------------------------------ a whole block, training
// f'(h) given h and z = f(h), as excite.kernels.activations' backward rows.
template <typename T>
__attribute__((always_inline)) inline T act_grad(Act a, T h, T z) {
  switch (a) {
    case Act::kRelu: return h > T(0) ? T(1) : T(0);
    case Act::kSilu: {
      const T sig = T(1) / (T(1) + std::exp(-h));
      return sig * (T(1) + h * (T(1) - sig));
    }
    case Act::kGelu:
      return T(0.5) * (T(1) + std::erf(h * T(0.70710678118654752440))) +
             h * std::exp(T(-0.5) * h * h) * T(0.39894228040143267794);
    case Act::kTanh: return T(1) - z * z;
    case Act::kSigmoid: return z * (T(1) - z);
    case Act::kHardSigmoid: return (h > T(-3) && h < T(3)) ? T(1) / T(6) : T(0);
    case Act::kIdentity: return T(1);
  }
  return T(1);
}

// Training forward of a block (as block_forward, with what the backward needs):
//   returns {out, pooled (Pc, N, C), h (Pc, N, hidden), logits (N, C), g (N, C), idx_c (N, C),
//            maps (N, Ps, S), conv (N, S), s (N, S), idx_s (N, S)}
// small tensors in the opmath dtype (maps rounded to x's dtype first, as the reference
// path's F' is a tensor of x's dtype); absent parts are undefined; idx_* only with
// need_index (argmax positions of the max pools, for their gradient).
std::vector<Tensor> block_train_forward(
    const Tensor& x3, const Tensor& out3, c10::IntArrayRef spatial, const c10::optional<Tensor>& w1_,
    const c10::optional<Tensor>& b1_, const c10::optional<Tensor>& w2_, const c10::optional<Tensor>& b2_,
    bool channel_avg, bool channel_max, const std::string& act, const c10::optional<Tensor>& weight_,
    const c10::optional<Tensor>& scale, const c10::optional<Tensor>& shift, bool avg_first, bool spatial_avg,
    bool spatial_max, const std::string& gate, bool need_index) {
  check3(x3, "x");
  TORCH_CHECK(out3.sizes() == x3.sizes() && out3.strides() == x3.strides(), "out must be laid out as x");
  const BlockSpec spec = block_spec(w1_.has_value() && w1_->defined(), channel_avg, channel_max, act,
                                    weight_.has_value() && weight_->defined(), avg_first, spatial_avg, spatial_max, gate);
  const int64_t n = x3.size(0), c = x3.size(1), s = x3.size(2);
  const auto acc = at::toOpMathType(x3.scalar_type());
  auto opts = x3.options().dtype(acc);
  const bool ncs = is_ncs(x3);
  Tensor pooled, h, logits, g, idx_c, maps, conv, sg, idx_s;
  if (spec.channel) {
    Tensor w1 = as_small(w1_, acc), b1 = as_small(b1_, acc), w2 = as_small(w2_, acc), b2 = as_small(b2_, acc);
    const int64_t hid = w1.size(0);
    pooled = at::empty({spec.pc, n, c}, opts);
    if (channel_max && need_index) idx_c = at::empty({n, c}, x3.options().dtype(at::kLong));
    logits = at::empty({n, c}, opts);
    g = at::empty({n, c}, opts);
    if (n > 0) {
      AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x3.scalar_type(), "block_train_forward", [&] {
        using acc_t = at::opmath_type<scalar_t>;
        acc_t* pp = pooled.mutable_data_ptr<acc_t>();
        global_pools_kernel<scalar_t, acc_t>(x3.const_data_ptr<scalar_t>(), n, c, s, ncs,
                                             channel_avg ? pp : nullptr,
                                             channel_max ? pp + (spec.pc - 1) * n * c : nullptr,
                                             idx_c.defined() ? idx_c.mutable_data_ptr<int64_t>() : nullptr);
      });
    }
    h = mm_nt(pooled.view({spec.pc * n, c}), w1).view({spec.pc, n, hid});
    Tensor zsum = at::zeros({n, hid}, opts);
    AT_DISPATCH_FLOATING_TYPES(acc, "mlp", [&] {
      scalar_t* hp = h.mutable_data_ptr<scalar_t>();
      scalar_t* zp = zsum.mutable_data_ptr<scalar_t>();
      const scalar_t* bp = ptr_or_null<scalar_t>(b1);
      if (bp != nullptr)
        for (int64_t r = 0; r < spec.pc * n; ++r)
          for (int64_t j = 0; j < hid; ++j) hp[r * hid + j] += bp[j];
      for (int64_t q = 0; q < spec.pc; ++q)
        for (int64_t i = 0; i < n * hid; ++i) zp[i] += act_value(spec.act, hp[q * n * hid + i]);
    });
    logits = mm_nt(zsum, w2);
    if (b2.defined()) {
      AT_DISPATCH_FLOATING_TYPES(acc, "mlp bias", [&] {
        scalar_t* lp = logits.mutable_data_ptr<scalar_t>();
        const scalar_t* bp = b2.const_data_ptr<scalar_t>();
        const scalar_t p = static_cast<scalar_t>(spec.pc);
        for (int64_t i = 0; i < n; ++i)
          for (int64_t k = 0; k < c; ++k) lp[i * c + k] += p * bp[k];
      });
    }
    AT_DISPATCH_FLOATING_TYPES(acc, "gate", [&] {
      const scalar_t* lp = logits.const_data_ptr<scalar_t>();
      scalar_t* gp = g.mutable_data_ptr<scalar_t>();
      std::copy(lp, lp + n * c, gp);
      act_inplace(spec.gate, gp, n * c);
    });
  }
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x3.scalar_type(), "block_train_forward", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const scalar_t* xp = x3.const_data_ptr<scalar_t>();
    std::vector<scalar_t> gx;  // g rounded to x's dtype (empty: 1)
    if (spec.channel) {
      gx.resize(n * c);
      const acc_t* gp = g.const_data_ptr<acc_t>();
      for (int64_t i = 0; i < n * c; ++i) gx[i] = from_acc<scalar_t>(gp[i]);
    }
    std::vector<scalar_t> sx;
    if (spec.spatial) {
      Tensor weight = as_small(weight_, acc);
      TORCH_CHECK(weight.size(0) == 1 && weight.size(1) == spec.ps, "weight must be (1, P, *k) for P maps");
      maps = at::empty({n, spec.ps, s}, opts);
      if (spec.max_slot >= 0 && need_index) idx_s = at::empty({n, s}, x3.options().dtype(at::kLong));
      conv = at::empty({n, s}, opts);
      sg = at::empty({n, s}, opts);
      if (n > 0) {
        acc_t* mp = maps.mutable_data_ptr<acc_t>();
        int64_t* ip = idx_s.defined() ? idx_s.mutable_data_ptr<int64_t>() : nullptr;
        const scalar_t* gxp = gx.empty() ? nullptr : gx.data();
        if (std::is_same<scalar_t, acc_t>::value) {
          gated_channel_pools_kernel<scalar_t, acc_t>(xp, gxp, n, c, s, ncs, spec.ps, spec.avg_slot, spec.max_slot, mp, ip);
        } else {  // maps of x's dtype, as F' is
          std::vector<scalar_t> mx(n * spec.ps * s);
          gated_channel_pools_kernel<scalar_t, scalar_t>(xp, gxp, n, c, s, ncs, spec.ps, spec.avg_slot, spec.max_slot,
                                                         mx.data(), ip);
          for (int64_t i = 0; i < n * spec.ps * s; ++i) mp[i] = to_acc(mx[i]);
        }
        const Geometry geo = geometry(spatial, weight.sizes().slice(2));
        acc_t* cp = conv.mutable_data_ptr<acc_t>();
        conv_same_loop<acc_t>(mp, weight.const_data_ptr<acc_t>(), cp, n, spec.ps, 1, geo, false);
        const acc_t a = static_cast<acc_t>(scalar_of(scale, 1.0)), b = static_cast<acc_t>(scalar_of(shift, 0.0));
        acc_t* sp = sg.mutable_data_ptr<acc_t>();
        sx.resize(n * s);
        for (int64_t i = 0; i < n * s; ++i) sp[i] = cp[i] * a + b;
        act_inplace(spec.gate, sp, n * s);
        for (int64_t i = 0; i < n * s; ++i) sx[i] = from_acc<scalar_t>(sp[i]);
      }
    }
    if (n > 0) {
      apply_kernel<scalar_t>(xp, gx.empty() ? nullptr : gx.data(), sx.empty() ? nullptr : sx.data(),
                             out3.mutable_data_ptr<scalar_t>(), n, c, s, ncs);
    }
  });
  return {out3, pooled, h, logits, g, idx_c, maps, conv, sg, idx_s};
}

// sum_s x[n, c, s] * (dmap_avg[n, s] / C + [c == idx[n, s]] * dmap_max[n, s]): the part of
// dL/dM_c that flows through the spatial module's maps of F' = x * M_c, in one pass over x.
Tensor maps_grad_dot(const Tensor& x3, const Tensor& dmaps, int64_t avg_slot, int64_t max_slot, const Tensor& idx) {
  const int64_t n = x3.size(0), c = x3.size(1), s = x3.size(2), p = dmaps.size(1);
  const auto acc = at::toOpMathType(x3.scalar_type());
  Tensor out = at::zeros({n, c}, x3.options().dtype(acc));
  if (x3.numel() == 0) return out;
  const bool ncs = is_ncs(x3);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x3.scalar_type(), "maps_grad_dot", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const scalar_t* xp = x3.const_data_ptr<scalar_t>();
    const acc_t* dp = dmaps.const_data_ptr<acc_t>();
    const int64_t* ip = max_slot >= 0 ? idx.const_data_ptr<int64_t>() : nullptr;
    acc_t* op = out.mutable_data_ptr<acc_t>();
    const acc_t inv_c = acc_t(1) / static_cast<acc_t>(c);
    if (ncs) {
      at::parallel_for(0, n * c, std::max<int64_t>(1, kGrain / std::max<int64_t>(s, 1)), [&](int64_t b, int64_t e) {
        for (int64_t r = b; r < e; ++r) {
          const int64_t i = r / c;
          const scalar_t* xr = xp + r * s;
          const acc_t* da = avg_slot >= 0 ? dp + (i * p + avg_slot) * s : nullptr;
          acc_t sum = 0;
          if (da != nullptr) {
            _Pragma("omp simd reduction(+ : sum)")
            for (int64_t j = 0; j < s; ++j) sum += to_acc(xr[j]) * da[j];
            sum *= inv_c;
          }
          op[r] = sum;
        }
      });
      if (max_slot >= 0) {  // the max map: x at each position's argmax channel
        at::parallel_for(0, n, std::max<int64_t>(1, kGrain / std::max<int64_t>(s, 1)), [&](int64_t b, int64_t e) {
          for (int64_t i = b; i < e; ++i) {
            const acc_t* dm = dp + (i * p + max_slot) * s;
            const int64_t* ir = ip + i * s;
            for (int64_t j = 0; j < s; ++j) op[i * c + ir[j]] += to_acc(xp[(i * c + ir[j]) * s + j]) * dm[j];
          }
        });
      }
    } else {
      at::parallel_for(0, n, std::max<int64_t>(1, kGrain / std::max<int64_t>(1, s * c)), [&](int64_t b, int64_t e) {
        for (int64_t i = b; i < e; ++i) {
          acc_t* orow = op + i * c;
          for (int64_t j = 0; j < s; ++j) {
            const scalar_t* xr = xp + (i * s + j) * c;
            if (avg_slot >= 0) {
              const acc_t w = dp[(i * p + avg_slot) * s + j] * inv_c;
              _Pragma("omp simd")
              for (int64_t k = 0; k < c; ++k) orow[k] += to_acc(xr[k]) * w;
            }
            if (max_slot >= 0) {
              const int64_t k = ip[i * s + j];
              orow[k] += to_acc(xr[k]) * dp[(i * p + max_slot) * s + j];
            }
          }
        }
      });
    }
  });
  return out;
}

// Backward of block_train_forward. dy3 and x3 are (N, C, S) views of one layout; the saved
// tensors as returned by the forward; weights as given to it. Returns {dx (x's dtype and
// layout), dw1, db1, dw2, db2, dweight, dscale, dshift} in the opmath dtype (undefined where
// absent or not needed: needs = {x, w1, b1, w2, b2, weight, scale, shift}).
std::vector<Tensor> block_backward(
    const Tensor& dy3, const Tensor& x3, c10::IntArrayRef spatial, const c10::optional<Tensor>& w1_,
    const c10::optional<Tensor>& w2_, bool channel_avg, bool channel_max, const std::string& act,
    const c10::optional<Tensor>& weight_, const c10::optional<Tensor>& scale, const c10::optional<Tensor>& shift,
    bool avg_first, bool spatial_avg, bool spatial_max, const std::string& gate,
    const c10::optional<Tensor>& pooled, const c10::optional<Tensor>& h, const c10::optional<Tensor>& logits,
    const c10::optional<Tensor>& g, const c10::optional<Tensor>& idx_c, const c10::optional<Tensor>& maps,
    const c10::optional<Tensor>& conv, const c10::optional<Tensor>& sg, const c10::optional<Tensor>& idx_s,
    std::vector<bool> needs) {
  TORCH_CHECK(needs.size() == 8, "needs has one flag per input: x, w1, b1, w2, b2, weight, scale, shift");
  const BlockSpec spec = block_spec(w1_.has_value() && w1_->defined(), channel_avg, channel_max, act,
                                    weight_.has_value() && weight_->defined(), avg_first, spatial_avg, spatial_max, gate);
  const int64_t n = x3.size(0), c = x3.size(1), s = x3.size(2);
  const auto acc = at::toOpMathType(x3.scalar_type());
  auto opts = x3.options().dtype(acc);
  const bool need_channel = spec.channel && (needs[0] || needs[1] || needs[2] || needs[3] || needs[4]);
  // dL/dM_s (N, S) and the dy part of dL/dM_c (N, C) in one pass over dy and x
  auto stats = grad_stats(dy3, x3, spec.channel ? c10::optional<Tensor>(*g) : c10::nullopt,
                          spec.spatial ? c10::optional<Tensor>(*sg) : c10::nullopt, spec.spatial, need_channel);
  Tensor dw1, db1, dw2, db2, dweight, dscale, dshift, dx, dmaps;
  if (spec.spatial) {
    Tensor weight = as_small(weight_, acc);
    const bool affine = scale.has_value() && scale->defined();
    Tensor dconv = at::empty({n, 1, s}, opts);
    double dsc = 0, dsh = 0;
    AT_DISPATCH_FLOATING_TYPES(acc, "spatial gate backward", [&] {
      const scalar_t a = static_cast<scalar_t>(scalar_of(scale, 1.0)), b = static_cast<scalar_t>(scalar_of(shift, 0.0));
      const scalar_t* dsp = stats[0].const_data_ptr<scalar_t>();
      // conv is not kept when neither an affine nor the gate's derivative needs it
      const scalar_t* cp = conv.has_value() && conv->defined() ? conv->const_data_ptr<scalar_t>() : nullptr;
      const scalar_t* sp = sg->const_data_ptr<scalar_t>();
      scalar_t* dp = dconv.mutable_data_ptr<scalar_t>();
      scalar_t sum_sc = 0, sum_sh = 0;
      for (int64_t i = 0; i < n * s; ++i) {
        const scalar_t pre = cp != nullptr ? cp[i] * a + b : sp[i];
        const scalar_t dpre = dsp[i] * act_grad(spec.gate, pre, sp[i]);
        if (cp != nullptr) sum_sc += dpre * cp[i];
        sum_sh += dpre;
        dp[i] = dpre * a;
      }
      dsc = sum_sc;
      dsh = sum_sh;
    });
    if (affine && needs[6]) dscale = at::full(scale->sizes(), dsc, opts);
    if (affine && needs[7]) dshift = at::full(shift->sizes(), dsh, opts);
    std::vector<int64_t> shape = {n, 1};
    shape.insert(shape.end(), spatial.begin(), spatial.end());
    Tensor dconv_full = dconv.view(shape);
    if (needs[5]) {
      std::vector<int64_t> mshape = {n, spec.ps};
      mshape.insert(mshape.end(), spatial.begin(), spatial.end());
      dweight = conv_same_weight_grad(maps->view(mshape), dconv_full, weight.sizes().slice(2));
    }
    dmaps = conv_same_input_grad(dconv_full, weight).view({n, spec.ps, s});
  }
  Tensor dpooled;
  if (need_channel) {
    Tensor dg = stats[1];
    if (spec.spatial) dg.add_(maps_grad_dot(x3, dmaps, spec.avg_slot, spec.max_slot,
                                            idx_s.has_value() ? *idx_s : Tensor()));
    Tensor w1 = as_small(w1_, acc), w2 = as_small(w2_, acc);
    const int64_t hid = w1.size(0);
    Tensor dlogits = at::empty({n, c}, opts), zsum = at::zeros({n, hid}, opts);
    AT_DISPATCH_FLOATING_TYPES(acc, "mlp backward", [&] {
      const scalar_t* dgp = dg.const_data_ptr<scalar_t>();
      const scalar_t* lp = logits->const_data_ptr<scalar_t>();
      const scalar_t* gp = g->const_data_ptr<scalar_t>();
      scalar_t* dlp = dlogits.mutable_data_ptr<scalar_t>();
      for (int64_t i = 0; i < n * c; ++i) dlp[i] = dgp[i] * act_grad(spec.gate, lp[i], gp[i]);
      const scalar_t* hp = h->const_data_ptr<scalar_t>();
      scalar_t* zp = zsum.mutable_data_ptr<scalar_t>();
      for (int64_t q = 0; q < spec.pc; ++q)
        for (int64_t i = 0; i < n * hid; ++i) zp[i] += act_value(spec.act, hp[q * n * hid + i]);
    });
    if (needs[3]) dw2 = mm_nn(dlogits.t(), zsum);
    if (needs[4]) db2 = col_sum(dlogits, static_cast<double>(spec.pc));
    Tensor dz = mm_nn(dlogits, w2);  // (N, hidden), the same for every descriptor
    Tensor dh = at::empty({spec.pc, n, hid}, opts);
    AT_DISPATCH_FLOATING_TYPES(acc, "act backward", [&] {
      const scalar_t* dzp = dz.const_data_ptr<scalar_t>();
      const scalar_t* hp = h->const_data_ptr<scalar_t>();
      scalar_t* dhp = dh.mutable_data_ptr<scalar_t>();
      for (int64_t q = 0; q < spec.pc; ++q)
        for (int64_t i = 0; i < n * hid; ++i) {
          const scalar_t hv = hp[q * n * hid + i];
          dhp[q * n * hid + i] = dzp[i] * act_grad(spec.act, hv, act_value(spec.act, hv));
        }
    });
    Tensor dh2 = dh.view({spec.pc * n, hid});
    if (needs[1]) dw1 = mm_nn(dh2.t(), pooled->view({spec.pc * n, c}));
    if (needs[2]) db1 = col_sum(dh2, 1.0);
    if (needs[0]) dpooled = mm_nn(dh2, w1).view({spec.pc, n, c});
  }
  if (needs[0]) {
    auto slot = [&](const Tensor& t, int64_t k) { return k >= 0 ? t.select(1, k).contiguous() : Tensor(); };
    Tensor dmap_avg = spec.spatial ? slot(dmaps, spec.avg_slot) : Tensor();
    Tensor dmap_max = spec.spatial ? slot(dmaps, spec.max_slot) : Tensor();
    Tensor dpool_avg = (spec.channel && channel_avg) ? dpooled.select(0, 0).contiguous() : Tensor();
    Tensor dpool_max = (spec.channel && channel_max) ? dpooled.select(0, spec.pc - 1).contiguous() : Tensor();
    dx = grad_input(dy3, spec.spatial ? c10::optional<Tensor>(sg->view({n, s})) : c10::nullopt, dmap_avg, dmap_max,
                    dmap_max.defined() ? c10::optional<Tensor>(*idx_s) : c10::nullopt,
                    spec.channel ? c10::optional<Tensor>(*g) : c10::nullopt, dpool_avg, dpool_max,
                    dpool_max.defined() ? c10::optional<Tensor>(*idx_c) : c10::nullopt);
  }
  return {dx, dw1, db1, dw2, db2, dweight, dscale, dshift};
}

}  // namespace

// ------------------------------------------------------ a whole block, autograd
// The training path as one C++ autograd function: its forward is block_train_forward, its
// backward block_backward, with no Python between (a Python autograd.Function costs tens
// of microseconds per pass in argument handling alone, more than the kernels on small maps).
// Inputs are as block_forward's; autocast is off inside (the block picks its own compute
// dtype); what is saved is kept at its least size: the maps in x's dtype (the values of
// x's dtype they are), the channel argmax in one byte when C <= 256, the convolution's
// output only where an affine or the gate's derivative needs it.
bool grad_from_output(Act a) { return a == Act::kTanh || a == Act::kSigmoid || a == Act::kIdentity; }

bool wants_grad(const c10::optional<Tensor>& t) { return t.has_value() && t->defined() && t->requires_grad(); }

Tensor opt(const c10::optional<Tensor>& t) { return t.has_value() ? *t : Tensor(); }

struct NativeBlock : public torch::autograd::Function<NativeBlock> {
  static Tensor forward(torch::autograd::AutogradContext* ctx, const Tensor& x, const c10::optional<Tensor>& w1,
                        const c10::optional<Tensor>& b1, const c10::optional<Tensor>& w2,
                        const c10::optional<Tensor>& b2, const c10::optional<Tensor>& weight,
                        const c10::optional<Tensor>& scale, const c10::optional<Tensor>& shift, bool channel_avg,
                        bool channel_max, const std::string& act, bool avg_first, bool spatial_avg, bool spatial_max,
                        const std::string& gate) {
    TORCH_CHECK(x.dim() >= 3 && x.dim() <= 5 && x.device().is_cpu(), "x must be an (N, C, *spatial) CPU tensor");
    c10::impl::ExcludeDispatchKeyGuard no_autocast(c10::autocast_dispatch_keyset);
    const std::vector<bool> needs = {x.requires_grad(), wants_grad(w1), wants_grad(b1), wants_grad(w2),
                                     wants_grad(b2), wants_grad(weight), wants_grad(scale), wants_grad(shift)};
    bool copied = false;
    Tensor x3 = ncs_view(x, copied);
    auto [out, out3] = output_like(x, copied);
    const bool need_index = needs[0] || needs[1] || needs[2] || needs[3] || needs[4];
    auto r = block_train_forward(x3, out3, x.sizes().slice(2), w1, b1, w2, b2, channel_avg, channel_max, act, weight,
                                 scale, shift, avg_first, spatial_avg, spatial_max, gate, need_index);
    Tensor maps = r[6], conv = r[7], idx_s = r[9];
    if (maps.defined()) maps = maps.to(x.scalar_type());
    if (idx_s.defined() && x.size(1) <= 256) idx_s = idx_s.to(at::kByte);
    if (!(scale.has_value() && scale->defined()) && grad_from_output(parse_act(gate))) conv = Tensor();
    ctx->save_for_backward({x, opt(w1), opt(w2), opt(weight), opt(scale), opt(shift), r[1], r[2], r[3], r[4], r[5],
                            maps, conv, r[8], idx_s});
    ctx->saved_data["flags"] = c10::List<bool>({channel_avg, channel_max, avg_first, spatial_avg, spatial_max});
    ctx->saved_data["act"] = act;
    ctx->saved_data["gate"] = gate;
    ctx->saved_data["needs"] = c10::List<bool>({needs[0], needs[1], needs[2], needs[3], needs[4], needs[5], needs[6], needs[7]});
    // the dtypes the weights' gradients go back in (they are computed in the opmath dtype)
    std::vector<int64_t> dts;
    for (const auto* t : {&w1, &b1, &w2, &b2, &weight, &scale, &shift}) {
      dts.push_back(t->has_value() && (*t)->defined() ? static_cast<int64_t>((*t)->scalar_type()) : -1);
    }
    ctx->saved_data["dtypes"] = c10::List<int64_t>(dts);
    return out;
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grad_outputs) {
    c10::impl::ExcludeDispatchKeyGuard no_autocast(c10::autocast_dispatch_keyset);
    auto saved = ctx->get_saved_variables();
    const Tensor& x = saved[0];
    const auto flag_list = ctx->saved_data["flags"].toBoolList();
    std::vector<bool> flags(flag_list.begin(), flag_list.end());
    const std::string act = ctx->saved_data["act"].toStringRef();
    const std::string gate = ctx->saved_data["gate"].toStringRef();
    const auto needs_list = ctx->saved_data["needs"].toBoolList();
    const auto dts = ctx->saved_data["dtypes"].toIntVector();
    std::vector<bool> needs(needs_list.begin(), needs_list.end());
    const Tensor& dout = grad_outputs[0];
    bool copied = false;
    Tensor x3 = ncs_view(x, copied), dy3 = ncs_view(dout, copied);
    if (dy3.strides() != x3.strides()) {  // dout laid out otherwise: into x's layout
      dy3 = ncs_view(dout.contiguous(x.suggest_memory_format()), copied);
      if (dy3.strides() != x3.strides()) {  // x was neither contiguous nor channels-last
        x3 = x3.contiguous();
        dy3 = dy3.contiguous();
      }
    }
    const auto acc = at::toOpMathType(x.scalar_type());
    Tensor maps = saved[11].defined() ? saved[11].to(acc) : Tensor();
    Tensor idx_s = saved[14].defined() ? saved[14].to(at::kLong) : Tensor();
    auto grads = block_backward(dy3, x3, x.sizes().slice(2), saved[1], saved[2], flags[0], flags[1], act, saved[3],
                                saved[4], saved[5], flags[2], flags[3], flags[4], gate, saved[6], saved[7], saved[8],
                                saved[9], saved[10], maps, saved[12], saved[13], idx_s, needs);
    torch::autograd::variable_list out(15);
    if (grads[0].defined()) out[0] = grads[0].view(x.sizes());  // laid out as x3
    for (size_t i = 1; i < 8; ++i) {
      Tensor g = grads[i];
      if (g.defined() && dts[i - 1] >= 0 && g.scalar_type() != static_cast<at::ScalarType>(dts[i - 1])) {
        g = g.to(static_cast<at::ScalarType>(dts[i - 1]));
      }
      out[i] = g;
    }
    return out;
  }
};

Tensor block_autograd(const Tensor& x, const c10::optional<Tensor>& w1, const c10::optional<Tensor>& b1,
                      const c10::optional<Tensor>& w2, const c10::optional<Tensor>& b2,
                      const c10::optional<Tensor>& weight, const c10::optional<Tensor>& scale,
                      const c10::optional<Tensor>& shift, bool channel_avg, bool channel_max, const std::string& act,
                      bool avg_first, bool spatial_avg, bool spatial_max, const std::string& gate) {
  return NativeBlock::apply(x, w1, b1, w2, b2, weight, scale, shift, channel_avg, channel_max, act, avg_first,
                            spatial_avg, spatial_max, gate);
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "excite: one-pass CPU kernels for SE / CBAM (see attention_cpu.cpp)";
  m.def("global_pools", &global_pools, "mean (opmath dtype) and max (+argmax) over S of an (N, C, S) view",
        py::arg("x3"), py::arg("want_avg"), py::arg("want_max"), py::arg("need_index"));
  m.def("gated_channel_pools", &gated_channel_pools,
        "mean and max over C of x * g: (N, P, S) maps in x's dtype (+argmax channel)",
        py::arg("x3"), py::arg("g"), py::arg("avg_first"), py::arg("want_avg"), py::arg("want_max"),
        py::arg("need_index"));
  m.def("apply", &apply, "(x * g) * s in x's layout", py::arg("x3"), py::arg("g"), py::arg("s") = py::none(),
        py::arg("out") = py::none());
  m.def("grad_stats", &grad_stats, "ds = sum_c g dy x and dg = sum_s dy x s in one pass", py::arg("dy3"),
        py::arg("x3"), py::arg("g") = py::none(), py::arg("s") = py::none(), py::arg("want_ds") = true,
        py::arg("want_dg") = true);
  m.def("grad_input", &grad_input, "dx of the channel/spatial gates in one pass over dy", py::arg("dy3"),
        py::arg("s") = py::none(), py::arg("dmap_avg") = py::none(), py::arg("dmap_max") = py::none(),
        py::arg("idx_s") = py::none(), py::arg("g") = py::none(), py::arg("dpool_avg") = py::none(),
        py::arg("dpool_max") = py::none(), py::arg("idx_c") = py::none());
  m.def("conv_same", &conv_same, "stride-1 'same' convolution (N, P, *spatial) x (O, P, *k), any rank",
        py::arg("maps"), py::arg("weight"));
  m.def("conv_same_input_grad", &conv_same_input_grad, "input gradient of conv_same", py::arg("grad"),
        py::arg("weight"));
  m.def("conv_same_weight_grad", &conv_same_weight_grad, "weight gradient of conv_same", py::arg("maps"),
        py::arg("grad"), py::arg("kernel_size"));
  m.def("block_forward", &block_forward, "a whole SE / M_c / M_s / CBAM block without autograd",
        py::arg("x"), py::arg("w1"), py::arg("b1"), py::arg("w2"), py::arg("b2"), py::arg("channel_avg"),
        py::arg("channel_max"), py::arg("act"), py::arg("weight"), py::arg("scale"), py::arg("shift"),
        py::arg("avg_first"), py::arg("spatial_avg"), py::arg("spatial_max"), py::arg("gate"),
        py::arg("residual") = py::none());
  m.def("block_train_forward", &block_train_forward, "a whole block's forward, keeping what its backward needs",
        py::arg("x3"), py::arg("out3"), py::arg("spatial"), py::arg("w1"), py::arg("b1"), py::arg("w2"), py::arg("b2"),
        py::arg("channel_avg"), py::arg("channel_max"), py::arg("act"), py::arg("weight"), py::arg("scale"),
        py::arg("shift"), py::arg("avg_first"), py::arg("spatial_avg"), py::arg("spatial_max"), py::arg("gate"),
        py::arg("need_index"));
  m.def("block_backward", &block_backward, "a whole block's backward (dx and every weight gradient)",
        py::arg("dy3"), py::arg("x3"), py::arg("spatial"), py::arg("w1"), py::arg("w2"), py::arg("channel_avg"),
        py::arg("channel_max"), py::arg("act"), py::arg("weight"), py::arg("scale"), py::arg("shift"),
        py::arg("avg_first"), py::arg("spatial_avg"), py::arg("spatial_max"), py::arg("gate"), py::arg("pooled"),
        py::arg("h"), py::arg("logits"), py::arg("g"), py::arg("idx_c"), py::arg("maps"), py::arg("conv"),
        py::arg("s"), py::arg("idx_s"), py::arg("needs"));
  m.def("block_autograd", &block_autograd, "a whole block with autograd: one C++ call per pass",
        py::arg("x"), py::arg("w1"), py::arg("b1"), py::arg("w2"), py::arg("b2"), py::arg("weight"), py::arg("scale"),
        py::arg("shift"), py::arg("channel_avg"), py::arg("channel_max"), py::arg("act"), py::arg("avg_first"),
        py::arg("spatial_avg"), py::arg("spatial_max"), py::arg("gate"));
  m.def("maps_grad_dot", &maps_grad_dot, "sum_s x * d(channel-pooled maps)/dF' in one pass over x",
        py::arg("x3"), py::arg("dmaps"), py::arg("avg_slot"), py::arg("max_slot"), py::arg("idx"));
}
