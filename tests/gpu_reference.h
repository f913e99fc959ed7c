// Optional vendor references for the CUDA convolution: cuDNN (every pass) and cuBLAS (a 1x1
// stride-1 forward is the GEMM [N*H*W, C] x [C, K]). Compiled in only where CMake found them
// (ENGINE_HAVE_CUDNN, ENGINE_HAVE_CUBLAS, set by tests/CMakeLists.txt on test_cuda_conv2d and
// bench_kernels); the engine never links them. Float32, default stream, device pointers.
#pragma once
#include <stdexcept>
#include <string>

#include "kernels/common/conv2d_shape.h"
#include "kernels/cuda/runtime.h"

#ifdef ENGINE_HAVE_CUDNN
#include <cudnn.h>
#endif
#ifdef ENGINE_HAVE_CUBLAS
#include <cublas_v2.h>
#endif

namespace gpu_reference {

#ifdef ENGINE_HAVE_CUDNN
inline void cudnn_check(cudnnStatus_t status, const char* call) {
  if (status != CUDNN_STATUS_SUCCESS)
    throw std::runtime_error(std::string("cuDNN: ") + call + ": " + cudnnGetErrorString(status));
}
#define GPU_REFERENCE_CUDNN(call) ::gpu_reference::cudnn_check((call), #call)

inline cudnnHandle_t cudnn_handle() {
  static cudnnHandle_t handle = [] {  // never destroyed: outlives the tests' static tensors
    cudnnHandle_t h = nullptr;
    GPU_REFERENCE_CUDNN(cudnnCreate(&h));
    return h;
  }();
  return handle;
}

// A float32 cuDNN convolution on our layouts: x NHWC, w KRSC (cuDNN's NHWC filter format),
// y NHWC. tensor_ops false: CUDNN_FMA_MATH, FMA kernels only, comparable with ConvMath::FP32;
// true: CUDNN_DEFAULT_MATH, which lets float32 run as TF32 on tensor cores (as PyTorch's
// allow_tf32), comparable with ConvMath::TF32.
// fastest: the algorithm cudnnFind* measures fastest (for benchmarks); else cuDNN's
// heuristic first choice (cudnnGet*_v7, quick).
class CudnnConv {
 public:
  CudnnConv(const kernels::Conv2dShape& s, bool tensor_ops, bool fastest)
      : s_(s), tensor_ops_(tensor_ops), fastest_(fastest) {
    GPU_REFERENCE_CUDNN(cudnnCreateTensorDescriptor(&x_));
    GPU_REFERENCE_CUDNN(cudnnCreateTensorDescriptor(&y_));
    GPU_REFERENCE_CUDNN(cudnnCreateTensorDescriptor(&b_));
    GPU_REFERENCE_CUDNN(cudnnCreateFilterDescriptor(&w_));
    GPU_REFERENCE_CUDNN(cudnnCreateConvolutionDescriptor(&conv_));
    const int N = int(s.N), C = int(s.C), K = int(s.K);
    GPU_REFERENCE_CUDNN(cudnnSetTensor4dDescriptor(x_, CUDNN_TENSOR_NHWC, CUDNN_DATA_FLOAT, N, C, int(s.H), int(s.W)));
    GPU_REFERENCE_CUDNN(cudnnSetTensor4dDescriptor(y_, CUDNN_TENSOR_NHWC, CUDNN_DATA_FLOAT, N, K, int(s.P), int(s.Q)));
    GPU_REFERENCE_CUDNN(cudnnSetTensor4dDescriptor(b_, CUDNN_TENSOR_NHWC, CUDNN_DATA_FLOAT, 1, K, 1, 1));
    GPU_REFERENCE_CUDNN(cudnnSetFilter4dDescriptor(w_, CUDNN_DATA_FLOAT, CUDNN_TENSOR_NHWC, K, C, int(s.R), int(s.S)));
    GPU_REFERENCE_CUDNN(cudnnSetConvolution2dDescriptor(conv_, int(s.pad), int(s.pad), int(s.stride), int(s.stride),
                                                        1, 1, CUDNN_CROSS_CORRELATION, CUDNN_DATA_FLOAT));
    GPU_REFERENCE_CUDNN(cudnnSetConvolutionMathType(conv_, tensor_ops ? CUDNN_DEFAULT_MATH : CUDNN_FMA_MATH));
  }
  ~CudnnConv() {
    cudnnDestroyTensorDescriptor(x_);
    cudnnDestroyTensorDescriptor(y_);
    cudnnDestroyTensorDescriptor(b_);
    cudnnDestroyFilterDescriptor(w_);
    cudnnDestroyConvolutionDescriptor(conv_);
    if (workspace_) kernels::cuda::device_free(workspace_);
  }
  CudnnConv(const CudnnConv&) = delete;
  CudnnConv& operator=(const CudnnConv&) = delete;

  void forward(const float* x, const float* w, float* y) {
    if (!fwd_) {
      cudnnConvolutionFwdAlgoPerf_t perf[CUDNN_CONVOLUTION_FWD_ALGO_COUNT];
      int n = 0;
      if (fastest_)
        GPU_REFERENCE_CUDNN(cudnnFindConvolutionForwardAlgorithm(cudnn_handle(), x_, w_, conv_, y_, CUDNN_CONVOLUTION_FWD_ALGO_COUNT, &n, perf));
      else
        GPU_REFERENCE_CUDNN(cudnnGetConvolutionForwardAlgorithm_v7(cudnn_handle(), x_, w_, conv_, y_, CUDNN_CONVOLUTION_FWD_ALGO_COUNT, &n, perf));
      const int i = pick(perf, n, "forward");
      fwd_algo_ = perf[i].algo;
      fwd_math_ = perf[i].mathType;
      fwd_ = true;
      size_t bytes = 0;
      set_math(fwd_math_);
      GPU_REFERENCE_CUDNN(cudnnGetConvolutionForwardWorkspaceSize(cudnn_handle(), x_, w_, conv_, y_, fwd_algo_, &bytes));
      reserve(bytes);
    }
    const float one = 1, zero = 0;
    set_math(fwd_math_);
    GPU_REFERENCE_CUDNN(cudnnConvolutionForward(cudnn_handle(), &one, x_, x, w_, w, conv_, fwd_algo_, workspace_,
                                                workspace_bytes_, &zero, y_, y));
  }
  void backward_data(const float* dy, const float* w, float* dx) {
    if (!bwd_data_) {
      cudnnConvolutionBwdDataAlgoPerf_t perf[CUDNN_CONVOLUTION_BWD_DATA_ALGO_COUNT];
      int n = 0;
      if (fastest_)
        GPU_REFERENCE_CUDNN(cudnnFindConvolutionBackwardDataAlgorithm(cudnn_handle(), w_, y_, conv_, x_, CUDNN_CONVOLUTION_BWD_DATA_ALGO_COUNT, &n, perf));
      else
        GPU_REFERENCE_CUDNN(cudnnGetConvolutionBackwardDataAlgorithm_v7(cudnn_handle(), w_, y_, conv_, x_, CUDNN_CONVOLUTION_BWD_DATA_ALGO_COUNT, &n, perf));
      const int i = pick(perf, n, "backward-data");
      bwd_data_algo_ = perf[i].algo;
      bwd_data_math_ = perf[i].mathType;
      bwd_data_ = true;
      size_t bytes = 0;
      set_math(bwd_data_math_);
      GPU_REFERENCE_CUDNN(cudnnGetConvolutionBackwardDataWorkspaceSize(cudnn_handle(), w_, y_, conv_, x_, bwd_data_algo_, &bytes));
      reserve(bytes);
    }
    const float one = 1, zero = 0;
    set_math(bwd_data_math_);
    GPU_REFERENCE_CUDNN(cudnnConvolutionBackwardData(cudnn_handle(), &one, w_, w, y_, dy, conv_, bwd_data_algo_,
                                                     workspace_, workspace_bytes_, &zero, x_, dx));
  }
  void backward_weight(const float* x, const float* dy, float* dw) {
    if (!bwd_filter_) {
      cudnnConvolutionBwdFilterAlgoPerf_t perf[CUDNN_CONVOLUTION_BWD_FILTER_ALGO_COUNT];
      int n = 0;
      if (fastest_)
        GPU_REFERENCE_CUDNN(cudnnFindConvolutionBackwardFilterAlgorithm(cudnn_handle(), x_, y_, conv_, w_, CUDNN_CONVOLUTION_BWD_FILTER_ALGO_COUNT, &n, perf));
      else
        GPU_REFERENCE_CUDNN(cudnnGetConvolutionBackwardFilterAlgorithm_v7(cudnn_handle(), x_, y_, conv_, w_, CUDNN_CONVOLUTION_BWD_FILTER_ALGO_COUNT, &n, perf));
      const int i = pick(perf, n, "backward-weight");
      bwd_filter_algo_ = perf[i].algo;
      bwd_filter_math_ = perf[i].mathType;
      bwd_filter_ = true;
      size_t bytes = 0;
      set_math(bwd_filter_math_);
      GPU_REFERENCE_CUDNN(cudnnGetConvolutionBackwardFilterWorkspaceSize(cudnn_handle(), x_, y_, conv_, w_, bwd_filter_algo_, &bytes));
      reserve(bytes);
    }
    const float one = 1, zero = 0;
    set_math(bwd_filter_math_);
    GPU_REFERENCE_CUDNN(cudnnConvolutionBackwardFilter(cudnn_handle(), &one, x_, x, y_, dy, conv_, bwd_filter_algo_,
                                                       workspace_, workspace_bytes_, &zero, w_, dw));
  }
  void backward_bias(const float* dy, float* db) {
    const float one = 1, zero = 0;
    GPU_REFERENCE_CUDNN(cudnnConvolutionBackwardBias(cudnn_handle(), &one, y_, dy, &zero, b_, db));
  }

 private:
  // First algorithm that ran (Find) or is supported (heuristics) with the allowed math.
  template <typename Perf>
  int pick(const Perf* perf, int n, const char* pass) const {
    for (int i = 0; i < n; ++i) {
      if (perf[i].status != CUDNN_STATUS_SUCCESS) continue;
      const bool tensor_math = perf[i].mathType == CUDNN_TENSOR_OP_MATH ||
                               perf[i].mathType == CUDNN_TENSOR_OP_MATH_ALLOW_CONVERSION;
      if (tensor_math && !tensor_ops_) continue;
      if (perf[i].memory > (size_t{4} << 30)) continue;  // leave the GPU's memory to the test
      return i;
    }
    throw std::runtime_error(std::string("cuDNN offers no usable ") + pass + " algorithm for this shape" +
                             (tensor_ops_ ? "" : " with FMA-only math"));
  }
  void set_math(cudnnMathType_t math) {
    // FMA-only runs keep CUDNN_FMA_MATH on the descriptor whatever the result reported
    GPU_REFERENCE_CUDNN(cudnnSetConvolutionMathType(conv_, tensor_ops_ ? math : CUDNN_FMA_MATH));
  }
  void reserve(size_t bytes) {
    if (bytes <= workspace_bytes_) return;
    if (workspace_) kernels::cuda::device_free(workspace_);
    workspace_ = nullptr;
    workspace_ = kernels::cuda::device_malloc(bytes);
    workspace_bytes_ = bytes;
  }

  kernels::Conv2dShape s_;
  bool tensor_ops_, fastest_;
  cudnnTensorDescriptor_t x_ = nullptr, y_ = nullptr, b_ = nullptr;
  cudnnFilterDescriptor_t w_ = nullptr;
  cudnnConvolutionDescriptor_t conv_ = nullptr;
  bool fwd_ = false, bwd_data_ = false, bwd_filter_ = false;
  cudnnConvolutionFwdAlgo_t fwd_algo_{};
  cudnnConvolutionBwdDataAlgo_t bwd_data_algo_{};
  cudnnConvolutionBwdFilterAlgo_t bwd_filter_algo_{};
  cudnnMathType_t fwd_math_{}, bwd_data_math_{}, bwd_filter_math_{};
  void* workspace_ = nullptr;
  size_t workspace_bytes_ = 0;
};
#endif  // ENGINE_HAVE_CUDNN

#ifdef ENGINE_HAVE_CUBLAS
inline void cublas_check(cublasStatus_t status, const char* call) {
  if (status != CUBLAS_STATUS_SUCCESS)
    throw std::runtime_error(std::string("cuBLAS: ") + call + " failed with status " + std::to_string(int(status)));
}
#define GPU_REFERENCE_CUBLAS(call) ::gpu_reference::cublas_check((call), #call)

inline cublasHandle_t cublas_handle() {
  static cublasHandle_t handle = [] {
    cublasHandle_t h = nullptr;
    GPU_REFERENCE_CUBLAS(cublasCreate(&h));
    return h;
  }();
  return handle;
}

// A 1x1, stride-1, unpadded convolution as one SGEMM: y[M, K] = x[M, C] w[K, C]^T with
// M = N*H*W (row-major; cuBLAS sees the column-major transposes). tensor_ops: allow TF32.
inline void conv1x1_gemm(const kernels::Conv2dShape& s, const float* x, const float* w, float* y, bool tensor_ops) {
  if (s.R != 1 || s.S != 1 || s.stride != 1 || s.pad != 0)
    throw std::runtime_error("conv1x1_gemm: not a 1x1 stride-1 unpadded convolution");
  const float one = 1, zero = 0;
  GPU_REFERENCE_CUBLAS(cublasSetMathMode(cublas_handle(), tensor_ops ? CUBLAS_TF32_TENSOR_OP_MATH : CUBLAS_DEFAULT_MATH));
  GPU_REFERENCE_CUBLAS(cublasSgemm(cublas_handle(), CUBLAS_OP_T, CUBLAS_OP_N, int(s.K), int(s.N * s.H * s.W), int(s.C),
                                   &one, w, int(s.C), x, int(s.C), &zero, y, int(s.K)));
}
#endif  // ENGINE_HAVE_CUBLAS

}  // namespace gpu_reference
