// Operand views of the convolution GEMMs in conv2d.cu: where element (row, kk) of each pass's
// A and B operands lives in memory, and where row m of the result goes. Included by conv2d.cu
// only; the formulation is described there and in conv2d.h.
#pragma once
#include <cuda_runtime.h>

#include <cassert>
#include <cstdint>

namespace kernels::cuda::conv {

// ---- device helpers ----

template <typename T>
constexpr int kVec = 16 / static_cast<int>(sizeof(T));  // elements in one 16-byte access

__device__ __forceinline__ void load_vec(const float* p, float (&v)[4]) {
  assert(reinterpret_cast<uintptr_t>(p) % 16 == 0);
  const float4 q = *reinterpret_cast<const float4*>(p);
  v[0] = q.x, v[1] = q.y, v[2] = q.z, v[3] = q.w;
}
__device__ __forceinline__ void load_vec(const double* p, double (&v)[2]) {
  assert(reinterpret_cast<uintptr_t>(p) % 16 == 0);
  const double2 q = *reinterpret_cast<const double2*>(p);
  v[0] = q.x, v[1] = q.y;
}
// Four consecutive elements, 16-byte aligned (shared or global memory).
__device__ __forceinline__ void load4(const float* p, float* v) {
  assert(reinterpret_cast<uintptr_t>(p) % 16 == 0);
  const float4 q = *reinterpret_cast<const float4*>(p);
  v[0] = q.x, v[1] = q.y, v[2] = q.z, v[3] = q.w;
}
__device__ __forceinline__ void load4(const double* p, double* v) {
  assert(reinterpret_cast<uintptr_t>(p) % 16 == 0);
  const double2 a = reinterpret_cast<const double2*>(p)[0], b = reinterpret_cast<const double2*>(p)[1];
  v[0] = a.x, v[1] = a.y, v[2] = b.x, v[3] = b.y;
}
__device__ __forceinline__ void store4(float* p, const float* v) {
  assert(reinterpret_cast<uintptr_t>(p) % 16 == 0);
  *reinterpret_cast<float4*>(p) = make_float4(v[0], v[1], v[2], v[3]);
}
__device__ __forceinline__ void store4(double* p, const double* v) {
  assert(reinterpret_cast<uintptr_t>(p) % 16 == 0);
  reinterpret_cast<double2*>(p)[0] = make_double2(v[0], v[1]);
  reinterpret_cast<double2*>(p)[1] = make_double2(v[2], v[3]);
}
__device__ __forceinline__ void store_vec(float* p, const float (&v)[4]) { store4(p, v); }
__device__ __forceinline__ void store_vec(double* p, const double (&v)[2]) {
  assert(reinterpret_cast<uintptr_t>(p) % 16 == 0);
  *reinterpret_cast<double2*>(p) = make_double2(v[0], v[1]);
}
__device__ __forceinline__ float madd(float a, float b, float c) { return fmaf(a, b, c); }
__device__ __forceinline__ double madd(double a, double b, double c) { return fma(a, b, c); }

template <typename T, int V>
__device__ __forceinline__ void set_zero(T (&v)[V]) {
#pragma unroll
  for (int i = 0; i < V; ++i) v[i] = T(0);
}

// ---- operand views: element (row or column, kk) of a GEMM operand, found in memory ----
// along-k views:  Line line(int row); load(line, kk, v) fills v with kk .. kk+V-1 (kk % V == 0)
// along-mn views: Line line(int col); load(line, kk, v) fills v with columns col .. col+V-1
// Out-of-range rows, columns and kk, and taps in the zero padding, read as 0.

// Forward A[(n,p,q), (r,s,c)] = x[n, p*stride - pad + r, q*stride - pad + s, c]   (along-k)
template <typename T_>
struct ForwardInput {
  using T = T_;
  static constexpr bool kAlongK = true;
  const T* x;
  int rows, depth;  // N*P*Q, R*S*C
  int H, W, C, S, P, Q, stride, pad;
  bool vec;  // C % V == 0 and x 16-byte aligned: V consecutive kk are channels of one tap
  struct Line {
    const T* image;
    int h0, w0;
    bool ok;
  };
  __device__ Line line(int m) const {
    Line l;
    l.ok = m < rows;
    if (!l.ok) m = 0;
    const int n = m / (P * Q), pq = m - n * (P * Q), p = pq / Q, q = pq - p * Q;
    l.image = x + static_cast<int64_t>(n) * H * W * C;
    l.h0 = p * stride - pad;
    l.w0 = q * stride - pad;
    return l;
  }
  // Offset of element kk of the row in l.image, or -1 where it falls into the padding.
  __device__ int64_t offset(const Line& l, int kk) const {
    const int rs = kk / C, c = kk - rs * C, r = rs / S, s = rs - r * S;
    const int h = l.h0 + r, w = l.w0 + s;
    if (h < 0 || h >= H || w < 0 || w >= W) return -1;
    return (static_cast<int64_t>(h) * W + w) * C + c;
  }
  __device__ void load(const Line& l, int kk, T (&v)[kVec<T>]) const {
    if (vec) {
      const int64_t o = l.ok && kk < depth ? offset(l, kk) : -1;
      if (o >= 0) load_vec(l.image + o, v);
      else set_zero(v);
      return;
    }
#pragma unroll
    for (int i = 0; i < kVec<T>; ++i) {
      const int64_t o = l.ok && kk + i < depth ? offset(l, kk + i) : -1;
      v[i] = o >= 0 ? l.image[o] : T(0);
    }
  }
};

// Forward B[(r,s,c), k] = w[k, (r,s,c)]   (along-k; the view's row is the output channel k)
template <typename T_>
struct ForwardWeight {
  using T = T_;
  static constexpr bool kAlongK = true;
  const T* w;
  int rows, depth;  // K, R*S*C
  bool vec;         // depth % V == 0 and w 16-byte aligned
  struct Line {
    const T* base;
    bool ok;
  };
  __device__ Line line(int k) const {
    Line l;
    l.ok = k < rows;
    l.base = w + static_cast<int64_t>(l.ok ? k : 0) * depth;
    return l;
  }
  __device__ void load(const Line& l, int kk, T (&v)[kVec<T>]) const {
    if (vec) {
      if (l.ok && kk < depth) load_vec(l.base + kk, v);
      else set_zero(v);
      return;
    }
#pragma unroll
    for (int i = 0; i < kVec<T>; ++i) v[i] = l.ok && kk + i < depth ? l.base[kk + i] : T(0);
  }
};

// One stride phase of backward-data: input pixels (ph + stride*i, pw + stride*j), reached by
// the taps (r0 + stride*jr, s0 + stride*js) from output pixel (i + dh - jr, j + dw - js).
struct Phase {
  int ph, pw;    // phase
  int Hp, Wp;    // its input rows and columns
  int r0, s0;    // first tap row and column reaching it
  int nr, ns;    // number of tap rows and columns reaching it
  int dh, dw;    // output row of tap jr = 0 is i + dh
};

// Backward-data A[(n,i,j), (jr,js,k)] = dy[n, i + dh - jr, j + dw - js, k]   (along-k)
template <typename T_>
struct BackwardDataGrad {
  using T = T_;
  static constexpr bool kAlongK = true;
  const T* dy;
  int rows, depth;  // N*Hp*Wp, nr*ns*K
  int P, Q, K;
  Phase f;
  bool vec;  // K % V == 0 and dy 16-byte aligned
  struct Line {
    const T* image;
    int p0, q0;
    bool ok;
  };
  __device__ Line line(int m) const {
    Line l;
    l.ok = m < rows;
    if (!l.ok) m = 0;
    const int n = m / (f.Hp * f.Wp), ij = m - n * (f.Hp * f.Wp), i = ij / f.Wp, j = ij - i * f.Wp;
    l.image = dy + static_cast<int64_t>(n) * P * Q * K;
    l.p0 = i + f.dh;
    l.q0 = j + f.dw;
    return l;
  }
  __device__ int64_t offset(const Line& l, int kk) const {
    const int t = kk / K, k = kk - t * K, jr = t / f.ns, js = t - jr * f.ns;
    const int p = l.p0 - jr, q = l.q0 - js;
    if (p < 0 || p >= P || q < 0 || q >= Q) return -1;
    return (static_cast<int64_t>(p) * Q + q) * K + k;
  }
  __device__ void load(const Line& l, int kk, T (&v)[kVec<T>]) const {
    if (vec) {
      const int64_t o = l.ok && kk < depth ? offset(l, kk) : -1;
      if (o >= 0) load_vec(l.image + o, v);
      else set_zero(v);
      return;
    }
#pragma unroll
    for (int i = 0; i < kVec<T>; ++i) {
      const int64_t o = l.ok && kk + i < depth ? offset(l, kk + i) : -1;
      v[i] = o >= 0 ? l.image[o] : T(0);
    }
  }
};

// Backward-data B[(jr,js,k), c] = w[k, r0 + stride*jr, s0 + stride*js, c]   (along-mn)
template <typename T_>
struct BackwardDataWeight {
  using T = T_;
  static constexpr bool kAlongK = false;
  const T* w;
  int cols, depth;  // C, nr*ns*K
  int R, S, K, stride;
  Phase f;
  bool vec;  // C % V == 0 and w 16-byte aligned
  struct Line {
    int c;
  };
  __device__ Line line(int c) const { return Line{c}; }
  __device__ void load(const Line& l, int kk, T (&v)[kVec<T>]) const {
    if (kk < depth) {
      const int t = kk / K, k = kk - t * K, jr = t / f.ns, js = t - jr * f.ns;
      const T* tap = w + ((static_cast<int64_t>(k) * R + f.r0 + stride * jr) * S + f.s0 + stride * js) * cols;
      if (vec) {
        if (l.c < cols) load_vec(tap + l.c, v);
        else set_zero(v);
        return;
      }
#pragma unroll
      for (int i = 0; i < kVec<T>; ++i) v[i] = l.c + i < cols ? tap[l.c + i] : T(0);
      return;
    }
    set_zero(v);
  }
};

// Backward-weight A[k, (n,p,q)] = dy[(n,p,q), k]   (along-mn; this GEMM's rows are k)
template <typename T_>
struct BackwardWeightGrad {
  using T = T_;
  static constexpr bool kAlongK = false;
  const T* dy;
  int cols, depth;  // K, N*P*Q
  bool vec;         // K % V == 0 and dy 16-byte aligned
  struct Line {
    int k;
  };
  __device__ Line line(int k) const { return Line{k}; }
  __device__ void load(const Line& l, int kk, T (&v)[kVec<T>]) const {
    if (kk < depth) {
      const T* pixel = dy + static_cast<int64_t>(kk) * cols;
      if (vec) {
        if (l.k < cols) load_vec(pixel + l.k, v);
        else set_zero(v);
        return;
      }
#pragma unroll
      for (int i = 0; i < kVec<T>; ++i) v[i] = l.k + i < cols ? pixel[l.k + i] : T(0);
      return;
    }
    set_zero(v);
  }
};

// Backward-weight B[(n,p,q), (r,s,c)] = x[n, p*stride - pad + r, q*stride - pad + s, c]
// (along-mn; columns are (r,s,c))
template <typename T_>
struct BackwardWeightInput {
  using T = T_;
  static constexpr bool kAlongK = false;
  const T* x;
  int cols, depth;  // R*S*C, N*P*Q
  int H, W, C, S, P, Q, stride, pad;
  bool vec;  // C % V == 0 and x 16-byte aligned: the V columns are channels of one tap
  struct Line {  // the first of this thread's V columns: its tap (r, s) and channel c
    int col, r, s, c;
  };
  __device__ Line line(int col) const {
    Line l;
    l.col = col;
    const int rs = col / C;
    l.c = col - rs * C;
    l.r = rs / S;
    l.s = rs - l.r * S;
    return l;
  }
  __device__ void load(const Line& l, int kk, T (&v)[kVec<T>]) const {
    if (kk < depth) {
      const int n = kk / (P * Q), pq = kk - n * (P * Q), p = pq / Q, q = pq - p * Q;
      const T* image = x + static_cast<int64_t>(n) * H * W * C;
      const int h0 = p * stride - pad, w0 = q * stride - pad;
      if (vec) {
        const int h = h0 + l.r, w = w0 + l.s;
        if (l.col < cols && h >= 0 && h < H && w >= 0 && w < W)
          load_vec(image + (static_cast<int64_t>(h) * W + w) * C + l.c, v);
        else
          set_zero(v);
        return;
      }
      // columns may cross into the next tap: decode each
#pragma unroll
      for (int i = 0; i < kVec<T>; ++i) {
        const int col = l.col + i, rs = col / C, c = col - rs * C, r = rs / S, s = rs - r * S;
        const int h = h0 + r, w = w0 + s;
        v[i] = col < cols && h >= 0 && h < H && w >= 0 && w < W
                   ? image[(static_cast<int64_t>(h) * W + w) * C + c]
                   : T(0);
      }
      return;
    }
    set_zero(v);
  }
};

// ---- where row m of C goes ----

// Row m at y + m * ld, plus bias[n] (bias may be null).
template <typename T>
struct DenseOut {
  T* ptr;
  int ld;
  const T* bias;
  __device__ int64_t row(int m) const { return static_cast<int64_t>(m) * ld; }
};

// Row m of a backward-data phase GEMM is input pixel (n, ph + stride*i, pw + stride*j) of dx.
template <typename T>
struct PhaseOut {
  T* ptr;
  int H, W, C, stride;
  Phase f;
  const T* bias;  // always null; read by the shared epilogue
  __device__ int64_t row(int m) const {
    const int n = m / (f.Hp * f.Wp), ij = m - n * (f.Hp * f.Wp), i = ij / f.Wp, j = ij - i * f.Wp;
    return ((static_cast<int64_t>(n) * H + f.ph + stride * i) * W + f.pw + stride * j) * C;
  }
};

template <class A_, class B_, class Out_>
struct GemmPass {
  using A = A_;
  using B = B_;
  using T = typename A::T;
  A a;
  B b;
  Out_ out;
  int M, Ng, Kg;  // C[M, Ng] = A[M, Kg] B[Kg, Ng]
};

}  // namespace kernels::cuda::conv
