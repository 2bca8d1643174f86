// Native XLA FFI CPU kernel for the max-activating examples: a batch's exact top-n frames of every
// neuron of one layer, in one pass over its activations (Python side: jaxneurons/stats/native/__init__.py,
// the tie rule and the state layout: jaxneurons/stats/examples.py).
//
//   inputs:  h       (..., N, D) float32  activations of one layer (or G stacked layers), one row per frame
//            utt     (N,) int32          global utterance index of every frame, < 0 = frame not counted
//            frame   (N,) int32          frame index of every frame within its utterance
//            bound_v (..., D) float32    per neuron, the running state's n-th entry (value, utt, frame):
//            bound_u (..., D) int32      only frames that come strictly before it in the tie order can
//            bound_f (..., D) int32      enter the state, so only those are kept (-inf / EMPTY = no bound)
//   outputs: value, utt, frame (..., D, n)   the batch's top n frames per neuron among those that can
//                                           enter, best first; empty slots -inf / EMPTY / EMPTY
//   attrs:   n (int64)
//
// Tie rule: value descending, then utterance ascending, then frame ascending; -0.0 is stored as 0.0.
//
// Why this is cheap: per neuron a bound (its n-th best so far, from the running state, then from its own
// heap once that holds n frames) is compared with every frame's activation in one SIMD pass over each row
// of h; only a frame that beats it (rare once the scan has seen a few hundred frames) is inserted into the
// neuron's heap of n entries (worst at the root). The result is exact: a frame of the batch that ends up in
// the merged top n comes before the state's n-th entry and before all but at most n - 1 frames of the batch.

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

#if defined(__AVX2__)
#include <immintrin.h>
#endif

#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace {

constexpr int32_t kEmpty = std::numeric_limits<int32_t>::max();

template <typename B>
inline int64_t Count(const B& b) { return static_cast<int64_t>(b.element_count()); }

struct Example {
  float v;
  int32_t u, f;
};

// a comes strictly before b in the tie rule.
inline bool Before(const Example& a, const Example& b) {
  return a.v > b.v || (a.v == b.v && (a.u < b.u || (a.u == b.u && a.f < b.f)));
}

// Max-heap by "comes later": the root is the worst kept example.
inline void SiftDown(Example* heap, int64_t size, int64_t pos) {
  const Example e = heap[pos];
  for (;;) {
    int64_t c = 2 * pos + 1;
    if (c >= size) break;
    if (c + 1 < size && Before(heap[c], heap[c + 1])) ++c;  // the later child
    if (!Before(e, heap[c])) break;
    heap[pos] = heap[c];
    pos = c;
  }
  heap[pos] = e;
}

inline void SiftUp(Example* heap, int64_t pos) {
  const Example e = heap[pos];
  while (pos > 0) {
    const int64_t p = (pos - 1) / 2;
    if (!Before(heap[p], e)) break;
    heap[pos] = heap[p];
    pos = p;
  }
  heap[pos] = e;
}

ffi::Error TopExamplesImpl(ffi::Buffer<ffi::F32> h, ffi::Buffer<ffi::S32> utt, ffi::Buffer<ffi::S32> frame,
                           ffi::Buffer<ffi::F32> bound_v, ffi::Buffer<ffi::S32> bound_u,
                           ffi::Buffer<ffi::S32> bound_f, ffi::ResultBuffer<ffi::F32> out_v,
                           ffi::ResultBuffer<ffi::S32> out_u, ffi::ResultBuffer<ffi::S32> out_f, int64_t n) {
  const auto hd = h.dimensions();
  const size_t rank = hd.size();
  if (rank < 2 || utt.dimensions().size() != 1 || frame.dimensions().size() != 1 || n < 1) {
    return ffi::Error::InvalidArgument("top_examples: need h (..., N, D), utt (N,), frame (N,), n >= 1");
  }
  const int64_t rows = hd[rank - 2], d = hd[rank - 1];
  if (utt.dimensions()[0] != rows || frame.dimensions()[0] != rows) {
    return ffi::Error::InvalidArgument("top_examples: utt / frame do not have one entry per row of h");
  }
  int64_t g = 1;
  for (size_t i = 0; i + 2 < rank; ++i) g *= hd[i];
  if (Count(bound_v) != g * d || Count(bound_u) != g * d || Count(bound_f) != g * d || Count(*out_v) != g * d * n ||
      Count(*out_u) != g * d * n || Count(*out_f) != g * d * n) {
    return ffi::Error::InvalidArgument("top_examples: bound / output shapes do not match h");
  }
  const int32_t* uu = utt.typed_data();
  const int32_t* ff = frame.typed_data();
  std::vector<Example> heaps(static_cast<size_t>(d * n));
  std::vector<int32_t> size(static_cast<size_t>(d));
  std::vector<float> bound(static_cast<size_t>(d));  // value a frame must reach to be looked at

  for (int64_t layer = 0; layer < g; ++layer) {
    const float* hp = h.typed_data() + layer * rows * d;
    const float* bv = bound_v.typed_data() + layer * d;
    const int32_t* bu = bound_u.typed_data() + layer * d;
    const int32_t* bf = bound_f.typed_data() + layer * d;
    std::fill(size.begin(), size.end(), 0);
    for (int64_t j = 0; j < d; ++j) bound[j] = bv[j];
    auto offer = [&](int64_t j, const Example& e) {
      Example* heap = heaps.data() + j * n;
      int32_t& s = size[j];
      if (s < n) {
        if (!Before(e, Example{bv[j], bu[j], bf[j]})) return;  // cannot enter the running state
        heap[s] = e;
        SiftUp(heap, s);
        if (++s == n) bound[j] = heap[0].v;
      } else {
        if (!Before(e, heap[0])) return;  // the heap's root already comes before the state's n-th entry
        heap[0] = e;
        SiftDown(heap, n, 0);
        bound[j] = heap[0].v;
      }
    };
    for (int64_t r = 0; r < rows; ++r) {
      const int32_t u = uu[r];
      if (u < 0) continue;
      const int32_t f = ff[r];
      const float* x = hp + r * d;
      int64_t j = 0;
#if defined(__AVX2__)
      for (; j + 8 <= d; j += 8) {  // branch-free test of 8 neurons; hits are rare after the first frames
        int m = _mm256_movemask_ps(
            _mm256_cmp_ps(_mm256_loadu_ps(x + j), _mm256_loadu_ps(bound.data() + j), _CMP_GE_OQ));
        while (m) {
          const int b = __builtin_ctz(m);
          m &= m - 1;
          offer(j + b, Example{x[j + b] + 0.0f, u, f});  // + 0.0f: -0.0 -> 0.0
        }
      }
#endif
      for (; j < d; ++j) {
        if (x[j] >= bound[j]) offer(j, Example{x[j] + 0.0f, u, f});
      }
    }
    float* ov = out_v->typed_data() + layer * d * n;
    int32_t* ou = out_u->typed_data() + layer * d * n;
    int32_t* of = out_f->typed_data() + layer * d * n;
    for (int64_t j = 0; j < d; ++j) {
      Example* heap = heaps.data() + j * n;
      const int32_t s = size[j];
      std::sort(heap, heap + s, Before);
      for (int64_t q = 0; q < n; ++q) {
        const bool full = q < s;
        ov[j * n + q] = full ? heap[q].v : -std::numeric_limits<float>::infinity();
        ou[j * n + q] = full ? heap[q].u : kEmpty;
        of[j * n + q] = full ? heap[q].f : kEmpty;
      }
    }
  }
  return ffi::Error::Success();
}

// The first n of two example lists that are each sorted best first (last axis n): a two-pointer merge,
// O(n) per neuron (the XLA merge compares all n x n pairs).
ffi::Error MergeExamplesImpl(ffi::Buffer<ffi::F32> av, ffi::Buffer<ffi::S32> au, ffi::Buffer<ffi::S32> af,
                             ffi::Buffer<ffi::F32> bv, ffi::Buffer<ffi::S32> bu, ffi::Buffer<ffi::S32> bf,
                             ffi::ResultBuffer<ffi::F32> ov, ffi::ResultBuffer<ffi::S32> ou,
                             ffi::ResultBuffer<ffi::S32> of) {
  const auto dims = av.dimensions();
  if (dims.size() == 0) return ffi::Error::InvalidArgument("merge_examples: need (..., n) arrays");
  const int64_t n = dims[dims.size() - 1], total = Count(av);
  for (int64_t c : {Count(au), Count(af), Count(bv), Count(bu), Count(bf), Count(*ov), Count(*ou), Count(*of)}) {
    if (c != total) return ffi::Error::InvalidArgument("merge_examples: the six inputs / outputs differ in size");
  }
  if (n == 0) return ffi::Error::Success();
  const float *pav = av.typed_data(), *pbv = bv.typed_data();
  const int32_t *pau = au.typed_data(), *paf = af.typed_data(), *pbu = bu.typed_data(), *pbf = bf.typed_data();
  float* pov = ov->typed_data();
  int32_t *pou = ou->typed_data(), *pof = of->typed_data();
  for (int64_t base = 0; base < total; base += n) {
    int64_t i = 0, j = 0;
    for (int64_t q = 0; q < n; ++q) {
      const Example a{pav[base + i], pau[base + i], paf[base + i]};
      const Example b{pbv[base + j], pbu[base + j], pbf[base + j]};
      // i, j < n always: q < n picks have been taken, so at most q from either list
      const bool take_b = Before(b, a);
      const Example& e = take_b ? b : a;
      pov[base + q] = e.v;
      pou[base + q] = e.u;
      pof[base + q] = e.f;
      if (take_b) ++j; else ++i;
    }
  }
  return ffi::Error::Success();
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(MergeExamples, MergeExamplesImpl,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::S32>>()
                                  .Arg<ffi::Buffer<ffi::S32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::S32>>()
                                  .Arg<ffi::Buffer<ffi::S32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::S32>>()
                                  .Ret<ffi::Buffer<ffi::S32>>());

XLA_FFI_DEFINE_HANDLER_SYMBOL(TopExamples, TopExamplesImpl,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::S32>>()
                                  .Arg<ffi::Buffer<ffi::S32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::S32>>()
                                  .Arg<ffi::Buffer<ffi::S32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::S32>>()
                                  .Ret<ffi::Buffer<ffi::S32>>()
                                  .Attr<int64_t>("n"));
