// Safetensors files (https://github.com/huggingface/safetensors): the format of the converted
// torchvision weights and of the engine's own checkpoints. weights/FORMAT.md documents the
// layout, the dtypes and the key names we use.
//
// Reading memory-maps the file and validates the whole header before anything is returned,
// so a corrupt or hostile file gives an engine::Error naming the file (and the key at
// fault), never a crash or an allocation sized by an unchecked header value. Writing is
// atomic: the old file survives any failure.
#pragma once
#include <cstdint>
#include <map>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "engine/tensor.h"

namespace engine {

// One tensor's entry in the header.
struct SafeTensorInfo {
  std::string name;
  std::string dtype;  // as spelled in the file: "F32", "F16", "BF16", "I64", ...
  Shape shape;
  uint64_t data_begin = 0;  // byte range [data_begin, data_end) within the data section
  uint64_t data_end = 0;
};

class SafeTensorsReader {
 public:
  // Maps `path` read-only and validates it: header length, JSON syntax and nesting, every
  // entry (known dtype, shape, offsets consistent with shape and dtype and inside the data
  // section), tensors neither overlapping nor leaving gaps (the reference implementation's
  // rule), metadata values being strings.
  static SafeTensorsReader open(const std::string& path);

  SafeTensorsReader(SafeTensorsReader&& other) noexcept;
  SafeTensorsReader& operator=(SafeTensorsReader&& other) noexcept;
  SafeTensorsReader(const SafeTensorsReader&) = delete;
  SafeTensorsReader& operator=(const SafeTensorsReader&) = delete;
  ~SafeTensorsReader();

  const std::string& path() const { return path_; }
  // Tensor names in file order (by data offset).
  std::vector<std::string> keys() const;
  bool has(const std::string& name) const { return index_.count(name) != 0; }
  const SafeTensorInfo& info(const std::string& name) const;
  // The "__metadata__" object (empty when the file has none).
  const std::map<std::string, std::string>& metadata() const { return metadata_; }

  // A new CPU tensor of dtype `target` (F32 or F64) holding tensor `name`, converted from
  // any of F64, F32, F16, BF16, I64, I32, I16, I8, U64, U32, U16, U8, BOOL. Half and
  // bfloat16 convert exactly (subnormals, infinities and NaN included); integers round to
  // the nearest representable value when they exceed the target's mantissa.
  // Thread-safe: reads only the read-only mapping.
  Tensor read(const std::string& name, DType target = DType::F32) const;

 private:
  SafeTensorsReader() = default;
  void unmap() noexcept;

  std::string path_;
  const uint8_t* mapping_ = nullptr;  // the whole file, PROT_READ
  size_t mapping_bytes_ = 0;
  const uint8_t* data_section_ = nullptr;          // first byte after the header
  std::vector<SafeTensorInfo> tensors_;            // sorted by data offset
  std::unordered_map<std::string, size_t> index_;  // name -> position in tensors_
  std::map<std::string, std::string> metadata_;
};

// Writes `tensors` (F32 or F64, any device; copied to the host) and `metadata` to `path`
// as a safetensors file. The bytes are those Python's safetensors.torch.save_file produces
// for the same dict: tensors laid out by descending element size, then by name; compact
// JSON header with "__metadata__" first (omitted when empty); header padded with spaces to
// a multiple of 8 bytes. Names must be unique and not "__metadata__".
// Atomic: writes "<path>.tmp-<pid>" in the same folder, fsyncs it, renames it over `path`
// and fsyncs the folder. On failure `path` is untouched, the temporary file is removed and
// the engine::Error names the path and the OS error. (Crash tests can make the process kill
// itself at points of the n-th write: ENGINE_TEST_KILL_AT, described in safetensors.cpp.)
void write_safetensors(const std::string& path,
                       const std::vector<std::pair<std::string, Tensor>>& tensors,
                       const std::map<std::string, std::string>& metadata = {});

// `bytes` to `path`, with the same atomic protocol and errors as write_safetensors (for the
// small text files next to a checkpoint: results, metrics).
void write_file_atomically(const std::string& path, const std::string& bytes);

}  // namespace engine
