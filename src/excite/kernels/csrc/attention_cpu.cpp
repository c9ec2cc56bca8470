// One-pass CPU kernels for the channel and spatial attention blocks (SE, CBAM).
//
// Eager PyTorch needs one pass over x per reduction (mean, amax) and per product; these
// kernels read x once per stage of the block instead:
//
//   global_pools(x)          mean and max over the spatial axes      (1 read of x)
//   gated_channel_pools(x,g) mean and max over C of x * g             (1 read of x)
//   apply(x, g, s)           x * g * s                                (1 read, 1 write)
//   grad_stats(dy, x, g, s)  sum_c g dy x and sum_s dy x s           (1 read of dy and x)
//   grad_input(dy, ...)      dx of the gates from the small gradients  (1 read of dy, 1 write)
//
// Tensors arrive as (N, C, S) views, either NCS-contiguous (stride(2) == 1) or
// channels-last (stride(1) == 1, the (N, S, C) memory of a channels_last tensor).
// Reductions accumulate in at::opmath_type (float for float16/bfloat16), and products
// round to the input dtype where the reference path does (x * g is a tensor of x's dtype).
// The small tensors (g, s, pooled values) are contiguous.

#include <torch/extension.h>

#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

namespace {

using at::Tensor;

bool is_ncs(const Tensor& x3) { return x3.stride(2) == 1 || x3.size(2) == 1; }

void check3(const Tensor& x3, const char* name) {
  TORCH_CHECK(x3.dim() == 3, name, " must be an (N, C, S) view, got ", x3.dim(), " dims");
  TORCH_CHECK(x3.device().is_cpu(), name, " must be a CPU tensor");
  bool ncs = x3.stride(2) == 1 && x3.stride(1) == x3.size(2) && x3.stride(0) == x3.size(1) * x3.size(2);
  bool nsc = x3.stride(1) == 1 && x3.stride(2) == x3.size(1) && x3.stride(0) == x3.size(1) * x3.size(2);
  TORCH_CHECK(ncs || nsc || x3.numel() == 0 || x3.size(2) == 1 || x3.size(1) == 1, name,
              " must be contiguous or channels_last");
}

template <typename acc_t>
inline bool max_update(acc_t v, acc_t m) {
  // true when v replaces the running maximum m: larger, or the first NaN (torch.max semantics)
  return (v > m || std::isnan(v)) && !std::isnan(m);
}

// --------------------------------------------------------------------------- global pools
std::vector<Tensor> global_pools(const Tensor& x3, bool want_avg, bool want_max, bool need_index) {
  check3(x3, "x");
  const int64_t n = x3.size(0), c = x3.size(1), s = x3.size(2);
  auto acc_dtype = at::toOpMathType(x3.scalar_type());
  Tensor avg = want_avg ? at::empty({n, c}, x3.options().dtype(acc_dtype)) : Tensor();
  Tensor mx = want_max ? at::empty({n, c}, x3.options()) : Tensor();
  Tensor idx = (want_max && need_index) ? at::empty({n, c}, x3.options().dtype(at::kLong)) : Tensor();
  if (x3.numel() == 0) return {avg, mx, idx};
  const bool ncs = is_ncs(x3);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x3.scalar_type(), "global_pools", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const scalar_t* xp = x3.const_data_ptr<scalar_t>();
    acc_t* ap = want_avg ? avg.mutable_data_ptr<acc_t>() : nullptr;
    scalar_t* mp = want_max ? mx.mutable_data_ptr<scalar_t>() : nullptr;
    int64_t* ip = idx.defined() ? idx.mutable_data_ptr<int64_t>() : nullptr;
    if (ncs) {
      at::parallel_for(0, n * c, std::max<int64_t>(1, 16384 / std::max<int64_t>(s, 1)), [&](int64_t b, int64_t e) {
        for (int64_t r = b; r < e; ++r) {
          const scalar_t* row = xp + r * s;
          acc_t sum = 0;
          acc_t m = -std::numeric_limits<acc_t>::infinity();
          int64_t im = 0;
          if (ip != nullptr) {
            m = static_cast<acc_t>(row[0]);
            for (int64_t j = 0; j < s; ++j) {
              acc_t v = static_cast<acc_t>(row[j]);
              sum += v;
              if (max_update(v, m)) { m = v; im = j; }
            }
          } else {
_Pragma("omp simd reduction(+ : sum) reduction(max : m)")
            for (int64_t j = 0; j < s; ++j) {
              acc_t v = static_cast<acc_t>(row[j]);
              sum += v;
              m = v > m ? v : m;
            }
            if (std::isnan(sum)) {  // rare: restore NaN propagation of the max
              for (int64_t j = 0; j < s; ++j) {
                if (std::isnan(static_cast<acc_t>(row[j]))) { m = static_cast<acc_t>(row[j]); break; }
              }
            }
          }
          if (ap != nullptr) ap[r] = sum / static_cast<acc_t>(s);
          if (mp != nullptr) mp[r] = static_cast<scalar_t>(m);
          if (ip != nullptr) ip[r] = im;
        }
      });
    } else {  // channels-last: rows of C contiguous values, one per position
      const int64_t cblock = 256;
      const int64_t nblocks = (c + cblock - 1) / cblock;
      at::parallel_for(0, n * nblocks, 1, [&](int64_t b, int64_t e) {
        std::vector<acc_t> sum(cblock), m(cblock);
        std::vector<int64_t> im(cblock);
        for (int64_t t = b; t < e; ++t) {
          const int64_t i = t / nblocks, c0 = (t % nblocks) * cblock, cn = std::min(cblock, c - c0);
          const scalar_t* base = xp + i * s * c + c0;
          for (int64_t k = 0; k < cn; ++k) { sum[k] = 0; m[k] = static_cast<acc_t>(base[k]); im[k] = 0; }
          for (int64_t j = 0; j < s; ++j) {
            const scalar_t* row = base + j * c;
            acc_t* sp = sum.data();
            acc_t* mq = m.data();
            if (ip != nullptr) {
              for (int64_t k = 0; k < cn; ++k) {
                acc_t v = static_cast<acc_t>(row[k]);
                sp[k] += v;
                if (max_update(v, mq[k])) { mq[k] = v; im[k] = j; }
              }
            } else {
_Pragma("omp simd")
              for (int64_t k = 0; k < cn; ++k) {
                acc_t v = static_cast<acc_t>(row[k]);
                sp[k] += v;
                mq[k] = (v > mq[k] || std::isnan(v)) ? v : mq[k];
              }
            }
          }
          for (int64_t k = 0; k < cn; ++k) {
            const int64_t r = i * c + c0 + k;
            if (ap != nullptr) ap[r] = sum[k] / static_cast<acc_t>(s);
            if (mp != nullptr) mp[r] = static_cast<scalar_t>(m[k]);
            if (ip != nullptr) ip[r] = im[k];
          }
        }
      });
    }
  });
  return {avg, mx, idx};
}

// ------------------------------------------------------------------- gated channel pools
// maps[n, p, s] over c of y = x * g (y rounded to x's dtype): p = mean if want_avg first,
// then max; idx[n, s] = argmax channel. Maps are returned in x's dtype.
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
  const bool ncs = is_ncs(x3);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x3.scalar_type(), "gated_channel_pools", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const scalar_t* xp = x3.const_data_ptr<scalar_t>();
    const scalar_t* gp = g.const_data_ptr<scalar_t>();
    scalar_t* op = maps.mutable_data_ptr<scalar_t>();
    int64_t* ip = idx.defined() ? idx.mutable_data_ptr<int64_t>() : nullptr;
    const acc_t inv_c = acc_t(1) / static_cast<acc_t>(c);
    auto store = [&](int64_t i, int64_t j, acc_t sum, acc_t m, int64_t im) {
      if (avg_slot >= 0) op[(i * p + avg_slot) * s + j] = static_cast<scalar_t>(sum * inv_c);
      if (max_slot >= 0) op[(i * p + max_slot) * s + j] = static_cast<scalar_t>(m);
      if (ip != nullptr) ip[i * s + j] = im;
    };
    if (ncs) {
      const int64_t sblock = 512;
      const int64_t nblocks = (s + sblock - 1) / sblock;
      at::parallel_for(0, n * nblocks, 1, [&](int64_t b, int64_t e) {
        std::vector<acc_t> sum(sblock), m(sblock);
        std::vector<int64_t> im(sblock);
        for (int64_t t = b; t < e; ++t) {
          const int64_t i = t / nblocks, s0 = (t % nblocks) * sblock, sn = std::min(sblock, s - s0);
          const scalar_t* base = xp + i * c * s + s0;
          for (int64_t k = 0; k < sn; ++k) {
            sum[k] = 0; m[k] = -std::numeric_limits<acc_t>::infinity(); im[k] = 0;
          }
          for (int64_t ch = 0; ch < c; ++ch) {
            const scalar_t gv = gp[i * c + ch];
            const scalar_t* row = base + ch * s;
            acc_t* sp = sum.data();
            acc_t* mq = m.data();
            if (ip != nullptr) {
              int64_t* iq = im.data();
              for (int64_t k = 0; k < sn; ++k) {
                acc_t y = static_cast<acc_t>(static_cast<scalar_t>(row[k] * gv));
                sp[k] += y;
                if (ch == 0 || max_update(y, mq[k])) { mq[k] = y; iq[k] = ch; }
              }
            } else {
_Pragma("omp simd")
              for (int64_t k = 0; k < sn; ++k) {
                acc_t y = static_cast<acc_t>(static_cast<scalar_t>(row[k] * gv));
                sp[k] += y;
                mq[k] = (y > mq[k] || std::isnan(y)) ? y : mq[k];
              }
            }
          }
          for (int64_t k = 0; k < sn; ++k) store(i, s0 + k, sum[k], m[k], im[k]);
        }
      });
    } else {
      at::parallel_for(0, n * s, std::max<int64_t>(1, 16384 / std::max<int64_t>(c, 1)), [&](int64_t b, int64_t e) {
        for (int64_t r = b; r < e; ++r) {
          const int64_t i = r / s, j = r % s;
          const scalar_t* row = xp + r * c;
          const scalar_t* gr = gp + i * c;
          acc_t sum = 0;
          acc_t m = -std::numeric_limits<acc_t>::infinity();
          int64_t im = 0;
          if (ip != nullptr) {
            for (int64_t k = 0; k < c; ++k) {
              acc_t y = static_cast<acc_t>(static_cast<scalar_t>(row[k] * gr[k]));
              sum += y;
              if (k == 0 || max_update(y, m)) { m = y; im = k; }
            }
          } else {
_Pragma("omp simd reduction(+ : sum) reduction(max : m)")
            for (int64_t k = 0; k < c; ++k) {
              acc_t y = static_cast<acc_t>(static_cast<scalar_t>(row[k] * gr[k]));
              sum += y;
              m = y > m ? y : m;
            }
            if (std::isnan(sum)) m = sum;
          }
          store(i, j, sum, m, im);
        }
      });
    }
  });
  return {maps, idx};
}

// ------------------------------------------------------------------------------- apply
// out = (x * g) * s with both products rounded to x's dtype; g (N, C) and s (N, S) (or an
// undefined s: out = x * g). Written into out3 when given (an (N, C, S) view with x3's
// strides, e.g. of a fresh full-rank tensor), else into a new tensor of x3's layout.
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
  const bool ncs = is_ncs(x3);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x3.scalar_type(), "apply", [&] {
    const scalar_t* xp = x3.const_data_ptr<scalar_t>();
    const scalar_t* gp = g.const_data_ptr<scalar_t>();
    const scalar_t* sp = has_s ? s_opt->const_data_ptr<scalar_t>() : nullptr;
    scalar_t* op = out.mutable_data_ptr<scalar_t>();
    if (ncs) {
      at::parallel_for(0, n * c, std::max<int64_t>(1, 32768 / std::max<int64_t>(s, 1)), [&](int64_t b, int64_t e) {
        for (int64_t r = b; r < e; ++r) {
          const scalar_t gv = gp[r];
          const scalar_t* xr = xp + r * s;
          scalar_t* orow = op + r * s;
          if (sp != nullptr) {
            const scalar_t* sr = sp + (r / c) * s;
_Pragma("omp simd")
            for (int64_t j = 0; j < s; ++j) orow[j] = static_cast<scalar_t>(static_cast<scalar_t>(xr[j] * gv) * sr[j]);
          } else {
_Pragma("omp simd")
            for (int64_t j = 0; j < s; ++j) orow[j] = static_cast<scalar_t>(xr[j] * gv);
          }
        }
      });
    } else {
      at::parallel_for(0, n * s, std::max<int64_t>(1, 32768 / std::max<int64_t>(c, 1)), [&](int64_t b, int64_t e) {
        for (int64_t r = b; r < e; ++r) {
          const int64_t i = r / s;
          const scalar_t* gr = gp + i * c;
          const scalar_t* xr = xp + r * c;
          scalar_t* orow = op + r * c;
          if (sp != nullptr) {
            const scalar_t sv = sp[r];
_Pragma("omp simd")
            for (int64_t k = 0; k < c; ++k) orow[k] = static_cast<scalar_t>(static_cast<scalar_t>(xr[k] * gr[k]) * sv);
          } else {
_Pragma("omp simd")
            for (int64_t k = 0; k < c; ++k) orow[k] = static_cast<scalar_t>(xr[k] * gr[k]);
          }
        }
      });
    }
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
    at::parallel_for(0, n * nblocks, 1, [&](int64_t b, int64_t e) {
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
                acc_t pr = static_cast<acc_t>(dr[k]) * static_cast<acc_t>(xr[k]);
                dq[k] += gv * pr;
                dgsum += pr * srow[k];
              }
            } else {
              _Pragma("omp simd reduction(+ : dgsum)")
              for (int64_t k = 0; k < sn; ++k) {
                acc_t pr = static_cast<acc_t>(dr[k]) * static_cast<acc_t>(xr[k]);
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
                acc_t pr = static_cast<acc_t>(dr[ch]) * static_cast<acc_t>(xr[ch]);
                dssum += (grow != nullptr ? grow[ch] : acc_t(1)) * pr;
                dgrow[ch] += pr * sv;
              }
            } else {
              _Pragma("omp simd reduction(+ : dssum)")
              for (int64_t ch = 0; ch < c; ++ch) {
                acc_t pr = static_cast<acc_t>(dr[ch]) * static_cast<acc_t>(xr[ch]);
                dssum += (grow != nullptr ? grow[ch] : acc_t(1)) * pr;
              }
            }
            if (dsp != nullptr) dsp[i * s + j] = dssum;
          }
        }
      }
    });
  });
  return {ds, want_dg ? dg_part.sum(1) : Tensor()};
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
      at::parallel_for(0, n * c, std::max<int64_t>(1, 32768 / std::max<int64_t>(s, 1)), [&](int64_t b, int64_t e) {
        for (int64_t r = b; r < e; ++r) {
          const int64_t i = r / c, ch = r % c;
          const scalar_t* dr = dp + r * s;
          scalar_t* orow = xp + r * s;
          const acc_t gv = gp != nullptr ? gp[r] : acc_t(1);
          const acc_t base = pavg != nullptr ? pavg[r] * inv_s : acc_t(0);
          const acc_t* srow = sp != nullptr ? sp + i * s : nullptr;
          const acc_t* arow = mavg != nullptr ? mavg + i * s : nullptr;
          const acc_t* mrow = mmax != nullptr ? mmax + i * s : nullptr;
          const int64_t* irow = is != nullptr ? is + i * s : nullptr;
          _Pragma("omp simd")
          for (int64_t j = 0; j < s; ++j) {
            acc_t d = static_cast<acc_t>(dr[j]) * (srow != nullptr ? srow[j] : acc_t(1));
            if (arow != nullptr) d += arow[j] * inv_c;
            if (mrow != nullptr) d += irow[j] == ch ? mrow[j] : acc_t(0);
            orow[j] = static_cast<scalar_t>(d * gv + base);
          }
          if (pmax != nullptr) {
            const int64_t j = ic[r];
            orow[j] = static_cast<scalar_t>(static_cast<acc_t>(orow[j]) + pmax[r]);
          }
        }
      });
    } else {
      at::parallel_for(0, n * s, std::max<int64_t>(1, 32768 / std::max<int64_t>(c, 1)), [&](int64_t b, int64_t e) {
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
            acc_t d = static_cast<acc_t>(dr[ch]) * sv + av;
            orow[ch] = static_cast<scalar_t>(d * (grow != nullptr ? grow[ch] : acc_t(1)) +
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

}  // namespace

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
}
