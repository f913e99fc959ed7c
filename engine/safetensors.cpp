// Safetensors reading (mmap, validate everything, convert on read) and atomic writing.
// Layout: [u64 little-endian N][N bytes of JSON header][data section]; see weights/FORMAT.md.
// The checks follow the reference implementation (huggingface/safetensors, tensor.rs): tensors
// must tile the data section exactly, in offset order, with no overlap, gap or trailing byte.
#include "engine/safetensors.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cmath>
#include <csignal>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <nlohmann/json.hpp>
#include <set>
#include <tuple>
#include <type_traits>

#if !defined(__BYTE_ORDER__) || __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "safetensors I/O copies little-endian file bytes straight into host numbers"
#endif

namespace engine {
namespace {

using Json = nlohmann::json;

constexpr uint64_t kMaxHeaderBytes = 100ull << 20;  // as the reference: bounds the JSON parse
// A valid header nests 3 levels (object > entry > shape). The limit rejects hostile nesting
// before the parser sees it.
constexpr int kMaxJsonNesting = 16;
constexpr size_t kLengthFieldBytes = 8;
constexpr const char* kMetadataKey = "__metadata__";

// Every dtype the reference knows with a whole-byte element size. Knowing the size lets us
// validate (and skip) tensors we cannot convert.
// clang-format off
enum class FileDType { BOOL, U8, I8, F8_E5M2, F8_E4M3, F8_E8M0, I16, U16, F16, BF16,
                       I32, U32, F32, F64, I64, U64, C64 };
// clang-format on
struct FileDTypeSpec {
  FileDType type;
  const char* name;
  size_t bytes;
};
constexpr FileDTypeSpec kFileDTypes[] = {
    {FileDType::BOOL, "BOOL", 1},       {FileDType::U8, "U8", 1},
    {FileDType::I8, "I8", 1},           {FileDType::F8_E5M2, "F8_E5M2", 1},
    {FileDType::F8_E4M3, "F8_E4M3", 1}, {FileDType::F8_E8M0, "F8_E8M0", 1},
    {FileDType::I16, "I16", 2},         {FileDType::U16, "U16", 2},
    {FileDType::F16, "F16", 2},         {FileDType::BF16, "BF16", 2},
    {FileDType::I32, "I32", 4},         {FileDType::U32, "U32", 4},
    {FileDType::F32, "F32", 4},         {FileDType::F64, "F64", 8},
    {FileDType::I64, "I64", 8},         {FileDType::U64, "U64", 8},
    {FileDType::C64, "C64", 8},
};

const FileDTypeSpec* find_file_dtype(const std::string& name) {
  for (const FileDTypeSpec& spec : kFileDTypes)
    if (name == spec.name) return &spec;
  return nullptr;
}

std::string known_dtype_list() {
  std::string list;
  for (const FileDTypeSpec& spec : kFileDTypes)
    list += (list.empty() ? "" : ", ") + std::string(spec.name);
  return list;
}

// A JSON value for an error message, cut short: a header may be 100 MiB.
std::string excerpt(const Json& value) {
  constexpr size_t kMaxChars = 120;
  std::string text = value.dump(-1, ' ', false, Json::error_handler_t::replace);
  return text.size() <= kMaxChars ? text : text.substr(0, kMaxChars) + "...";
}

std::string range_str(uint64_t begin, uint64_t end) {
  return "[" + std::to_string(begin) + ", " + std::to_string(end) + "]";
}

class UniqueFd {
 public:
  explicit UniqueFd(int fd) : fd_(fd) {}
  ~UniqueFd() { reset(); }
  UniqueFd(const UniqueFd&) = delete;
  UniqueFd& operator=(const UniqueFd&) = delete;
  int get() const { return fd_; }
  // Closes now, returning close()'s result (0 or an errno): a delayed write error
  // (NFS, quota) can first surface here.
  int reset() {
    if (fd_ < 0) return 0;
    int result = ::close(fd_) == 0 ? 0 : errno;
    fd_ = -1;
    return result;
  }

 private:
  int fd_;
};

// Rejects JSON nested deeper than kMaxJsonNesting by counting brackets outside strings, so
// no parser ever recurses over a hostile "[[[[...". Malformed JSON is left to the parser.
void check_json_nesting(const std::string& path, const char* text, size_t size) {
  int depth = 0;
  bool in_string = false, escaped = false;
  for (size_t i = 0; i < size; ++i) {
    char c = text[i];
    if (in_string) {  // a quote ends the string unless a backslash escapes it
      in_string = escaped || c != '"';
      escaped = !escaped && c == '\\';
    } else if (c == '"') {
      in_string = true;
    } else if (c == '{' || c == '[') {
      ENGINE_CHECK(++depth <= kMaxJsonNesting, path, ": header JSON nests deeper than ",
                   kMaxJsonNesting, " levels (at byte ", i, " of the header)");
    } else if (c == '}' || c == ']') {
      --depth;
    }
  }
}

// A shape: non-negative integers whose product fits in int64 (the engine's element count)
// at every step, so no later arithmetic on it can overflow.
Shape parse_shape(const std::string& where, const Json& value) {
  ENGINE_CHECK(value.is_array(), where, "\"shape\" must be an array, got ", excerpt(value));
  Shape shape;
  shape.reserve(value.size());
  constexpr uint64_t kMaxCount = static_cast<uint64_t>(std::numeric_limits<int64_t>::max());
  uint64_t numel = 1;
  for (const Json& dim : value) {
    ENGINE_CHECK(dim.is_number_unsigned(), where, "\"shape\" must hold non-negative integers, got ",
                 excerpt(value));
    uint64_t extent = dim.get<uint64_t>();
    ENGINE_CHECK(
        extent <= kMaxCount && !__builtin_mul_overflow(numel, extent, &numel) && numel <= kMaxCount,
        where, "shape ", excerpt(value), " has more elements than fit in 63 bits");
    shape.push_back(static_cast<int64_t>(extent));
  }
  return shape;
}

SafeTensorInfo parse_entry(const std::string& path, const std::string& name, const Json& entry,
                           uint64_t data_bytes) {
  const std::string where = path + ": tensor '" + name + "': ";
  ENGINE_CHECK(entry.is_object(), where, "entry must be an object with dtype, shape and ",
               "data_offsets, got ", excerpt(entry));
  for (const char* field : {"dtype", "shape", "data_offsets"})
    ENGINE_CHECK(entry.contains(field), where, "missing \"", field, "\"");

  SafeTensorInfo info;
  info.name = name;
  const Json& dtype = entry["dtype"];
  ENGINE_CHECK(dtype.is_string(), where, "\"dtype\" must be a string, got ", excerpt(dtype));
  info.dtype = dtype.get<std::string>();
  const FileDTypeSpec* spec = find_file_dtype(info.dtype);
  ENGINE_CHECK(spec != nullptr, where, "unknown dtype \"", info.dtype,
               "\" (known: ", known_dtype_list(), ")");

  info.shape = parse_shape(where, entry["shape"]);

  const Json& offsets = entry["data_offsets"];
  ENGINE_CHECK(offsets.is_array() && offsets.size() == 2 && offsets[0].is_number_unsigned() &&
                   offsets[1].is_number_unsigned(),
               where, "\"data_offsets\" must be two non-negative integers, got ", excerpt(offsets));
  info.data_begin = offsets[0].get<uint64_t>();
  info.data_end = offsets[1].get<uint64_t>();
  const std::string range = range_str(info.data_begin, info.data_end);
  ENGINE_CHECK(info.data_begin <= info.data_end, where, "data_offsets ", range,
               " are reversed (begin > end)");
  ENGINE_CHECK(info.data_end <= data_bytes, where, "data_offsets ", range,
               " exceed the data section (", data_bytes, " bytes)");
  uint64_t expected_bytes = 0;
  ENGINE_CHECK(!__builtin_mul_overflow(static_cast<uint64_t>(shape_numel(info.shape)), spec->bytes,
                                       &expected_bytes),
               where, "shape ", shape_str(info.shape), " of ", info.dtype,
               " has more bytes than fit in 64 bits");
  ENGINE_CHECK(info.data_end - info.data_begin == expected_bytes, where, "data_offsets ", range,
               " span ", info.data_end - info.data_begin, " bytes but ", info.dtype, " ",
               shape_str(info.shape), " needs ", expected_bytes);
  return info;
}

std::map<std::string, std::string> parse_metadata(const std::string& path, const Json& value) {
  std::map<std::string, std::string> metadata;
  if (value.is_null()) return metadata;  // the reference writes no key, but reads null as none
  ENGINE_CHECK(value.is_object(), path, ": \"", kMetadataKey,
               "\" must be an object of strings, got ", excerpt(value));
  for (const auto& [key, item] : value.items()) {
    ENGINE_CHECK(item.is_string(), path, ": \"", kMetadataKey, "\" value of '", key,
                 "' must be a string, got ", excerpt(item));
    metadata.emplace(key, item.get<std::string>());
  }
  return metadata;
}

// ---- element conversion ----

// IEEE binary16 -> binary32, exactly: every half value (subnormals, infinities, NaN payloads)
// is representable as a float.
float half_to_float(uint16_t half) {
  const uint32_t sign = static_cast<uint32_t>(half >> 15) << 31;
  const uint32_t exponent = (half >> 10) & 0x1f;
  const uint32_t mantissa = half & 0x3ff;
  uint32_t bits;
  if (exponent == 0) {  // zero or subnormal: mantissa * 2^-24, a normal float
    float magnitude = std::ldexp(static_cast<float>(mantissa), -24);
    std::memcpy(&bits, &magnitude, sizeof bits);
  } else if (exponent == 0x1f) {  // infinity or NaN, payload kept
    bits = 0x7f800000u | (mantissa << 13);
  } else {  // normal: rebias the exponent from 15 to 127
    bits = ((exponent + 127 - 15) << 23) | (mantissa << 13);
  }
  bits |= sign;
  float value;
  std::memcpy(&value, &bits, sizeof value);
  return value;
}

// bfloat16 is the top half of a binary32.
float bfloat16_to_float(uint16_t bf16) {
  uint32_t bits = static_cast<uint32_t>(bf16) << 16;
  float value;
  std::memcpy(&value, &bits, sizeof value);
  return value;
}

// Reads `count` elements of type Raw (unaligned: the header length need not keep the data
// aligned) and stores decode(raw) as Dst.
template <typename Raw, typename Dst, typename Decode>
void convert_elements(const uint8_t* src, size_t count, Dst* dst, Decode decode) {
  for (size_t i = 0; i < count; ++i) {
    Raw raw;
    std::memcpy(&raw, src + i * sizeof(Raw), sizeof(Raw));
    dst[i] = static_cast<Dst>(decode(raw));
  }
}

template <typename Raw, typename Dst>
void convert_elements(const uint8_t* src, size_t count, Dst* dst) {
  convert_elements<Raw>(src, count, dst, [](Raw raw) { return raw; });
}

// Returns false for a dtype we do not convert.
template <typename Dst>
bool convert_to(FileDType type, const uint8_t* src, size_t count, Dst* dst) {
  constexpr bool kToFloat = std::is_same_v<Dst, float>;
  // clang-format off
  switch (type) {
    case FileDType::F32:
      if constexpr (kToFloat) std::memcpy(dst, src, count * sizeof(float));
      else convert_elements<float>(src, count, dst);
      return true;
    case FileDType::F64:
      if constexpr (!kToFloat) std::memcpy(dst, src, count * sizeof(double));
      else convert_elements<double>(src, count, dst);
      return true;
    case FileDType::F16: convert_elements<uint16_t>(src, count, dst, half_to_float); return true;
    case FileDType::BF16: convert_elements<uint16_t>(src, count, dst, bfloat16_to_float); return true;
    case FileDType::I64: convert_elements<int64_t>(src, count, dst); return true;
    case FileDType::I32: convert_elements<int32_t>(src, count, dst); return true;
    case FileDType::I16: convert_elements<int16_t>(src, count, dst); return true;
    case FileDType::I8: convert_elements<int8_t>(src, count, dst); return true;
    case FileDType::U64: convert_elements<uint64_t>(src, count, dst); return true;
    case FileDType::U32: convert_elements<uint32_t>(src, count, dst); return true;
    case FileDType::U16: convert_elements<uint16_t>(src, count, dst); return true;
    case FileDType::U8: convert_elements<uint8_t>(src, count, dst); return true;
    case FileDType::BOOL:
      convert_elements<uint8_t>(src, count, dst, [](uint8_t b) { return b != 0 ? 1 : 0; });
      return true;
    default: return false;  // the F8 formats and C64: validated, listed, not converted
  }
  // clang-format on
}

// ---- atomic writing ----

// Test hook for the crash-safety tests (tests/test_crash_resume.cpp): with the environment
// variable ENGINE_TEST_KILL_AT="<point>:<n>", the n-th write_safetensors call of the process
// kills the process (SIGKILL, so nothing is cleaned up) at <point>:
//   half     half of the tensor data is in the temporary file
//   written  every byte is written, nothing synced
//   synced   the temporary file is synced and closed, not yet renamed
//   renamed  renamed over the destination, its folder not yet synced
// Unset in normal use: one getenv per write. A malformed value is an error, not ignored.
void test_kill_point(const char* point, int write_index) {
  const char* spec = std::getenv("ENGINE_TEST_KILL_AT");
  if (!spec || !*spec) return;
  const char* colon = std::strchr(spec, ':');
  char* end = nullptr;
  long n = colon ? std::strtol(colon + 1, &end, 10) : 0;
  ENGINE_CHECK(colon && end && *end == '\0' && n >= 1, "ENGINE_TEST_KILL_AT='", spec,
               "': expected <point>:<n>, e.g. synced:2");
  std::string name(spec, colon);
  ENGINE_CHECK(name == "half" || name == "written" || name == "synced" || name == "renamed",
               "ENGINE_TEST_KILL_AT='", spec, "': the point is one of half, written, synced, renamed");
  if (name == point && n == write_index) ::kill(::getpid(), SIGKILL);
}

// Writes "<path>.tmp-<pid>"; commit() syncs it and renames it over `path`. Destroyed without
// a commit (an error anywhere, an exception from a device copy), it removes the temporary
// file, leaving `path` as it was. `write_index` (0: none) numbers the write for the test hook.
class AtomicFileWriter {
 public:
  explicit AtomicFileWriter(const std::string& path, int write_index = 0)
      : path_(path),
        temp_path_(path + ".tmp-" + std::to_string(::getpid())),
        write_index_(write_index),
        fd_(::open(temp_path_.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644)) {
    if (fd_.get() < 0) fail_os("cannot create the temporary file '" + temp_path_ + "'", errno);
  }
  ~AtomicFileWriter() {
    if (committed_) return;
    fd_.reset();
    ::unlink(temp_path_.c_str());
  }
  AtomicFileWriter(const AtomicFileWriter&) = delete;
  AtomicFileWriter& operator=(const AtomicFileWriter&) = delete;

  void write(const void* bytes, size_t size) {
    const char* next = static_cast<const char*>(bytes);
    while (size > 0) {
      ssize_t written = ::write(fd_.get(), next, std::min<size_t>(size, 1u << 30));
      if (written < 0 && errno == EINTR) continue;
      if (written <= 0) fail_os("writing '" + temp_path_ + "' failed", written < 0 ? errno : EIO);
      next += written;
      size -= static_cast<size_t>(written);
    }
  }

  // Crash-test hook (see test_kill_point) at a point of this write.
  void kill_point(const char* point) const {
    if (write_index_ > 0) test_kill_point(point, write_index_);
  }

  void commit() {
    kill_point("written");
    if (::fsync(fd_.get()) != 0) fail_os("fsync of '" + temp_path_ + "' failed", errno);
    if (int err = fd_.reset()) fail_os("closing '" + temp_path_ + "' failed", err);
    kill_point("synced");
    if (::rename(temp_path_.c_str(), path_.c_str()) != 0)
      fail_os("renaming '" + temp_path_ + "' over it failed", errno);
    committed_ = true;
    kill_point("renamed");
    sync_folder();
  }

 private:
  [[noreturn]] void fail_os(const std::string& what, int err) const {
    detail::fail(path_, ": ", what, ": ", std::strerror(err), " (", path_, " is unchanged)");
  }

  // Makes the rename itself durable. Some file systems cannot fsync a folder (EINVAL).
  void sync_folder() const {
    size_t slash = path_.find_last_of('/');
    std::string folder = slash == std::string::npos ? "." : path_.substr(0, slash + 1);
    UniqueFd dir(::open(folder.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    int err = dir.get() < 0 ? errno : (::fsync(dir.get()) == 0 ? 0 : errno);
    ENGINE_CHECK(err == 0 || err == EINVAL, path_, ": written, but syncing its folder '", folder,
                 "' failed: ", std::strerror(err), " (the new file may not survive a crash)");
  }

  std::string path_;
  std::string temp_path_;
  int write_index_;
  UniqueFd fd_;
  bool committed_ = false;
};

}  // namespace

// ---- SafeTensorsReader ----

SafeTensorsReader SafeTensorsReader::open(const std::string& path) {
  SafeTensorsReader reader;  // its destructor unmaps if a check below throws
  reader.path_ = path;

  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  ENGINE_CHECK(fd.get() >= 0, path, ": cannot open: ", std::strerror(errno));
  struct stat status;
  ENGINE_CHECK(::fstat(fd.get(), &status) == 0, path, ": cannot stat: ", std::strerror(errno));
  ENGINE_CHECK(S_ISREG(status.st_mode), path, ": not a regular file");
  const uint64_t file_bytes = static_cast<uint64_t>(status.st_size);
  ENGINE_CHECK(file_bytes != 0, path, ": empty file, not a safetensors file");
  ENGINE_CHECK(file_bytes >= kLengthFieldBytes, path, ": file has ", file_bytes,
               " bytes, fewer than the 8-byte header length; not a safetensors file");
  void* mapping = ::mmap(nullptr, file_bytes, PROT_READ, MAP_PRIVATE, fd.get(), 0);
  ENGINE_CHECK(mapping != MAP_FAILED, path, ": cannot map ", file_bytes,
               " bytes: ", std::strerror(errno));
  reader.mapping_ = static_cast<const uint8_t*>(mapping);
  reader.mapping_bytes_ = file_bytes;

  uint64_t header_bytes;
  std::memcpy(&header_bytes, reader.mapping_, sizeof header_bytes);
  const uint64_t after_length_field = file_bytes - kLengthFieldBytes;
  ENGINE_CHECK(header_bytes <= after_length_field, path, ": header length ", header_bytes,
               " exceeds the ", after_length_field,
               " bytes after the length field (truncated, or not a safetensors file)");
  ENGINE_CHECK(header_bytes <= kMaxHeaderBytes, path, ": header length ", header_bytes,
               " exceeds the limit of ", kMaxHeaderBytes, " bytes (100 MiB)");
  const char* header = reinterpret_cast<const char*>(reader.mapping_ + kLengthFieldBytes);
  check_json_nesting(path, header, header_bytes);

  // nlohmann keeps the last of duplicate keys; the callback sees them all.
  std::set<std::string> top_level_keys;
  std::string duplicate_key;
  auto find_duplicates = [&](int depth, Json::parse_event_t event, Json& parsed) {
    if (depth == 1 && event == Json::parse_event_t::key &&
        !top_level_keys.insert(parsed.get<std::string>()).second && duplicate_key.empty())
      duplicate_key = parsed.get<std::string>();
    return true;
  };
  Json root;
  try {
    root = Json::parse(header, header + header_bytes, find_duplicates);
  } catch (const Json::exception& e) {
    detail::fail(path, ": header is not valid JSON: ", e.what());
  }
  ENGINE_CHECK(root.is_object(), path, ": header must be a JSON object, got ", root.type_name());
  ENGINE_CHECK(duplicate_key.empty(), path, ": header names '", duplicate_key, "' twice");

  const uint64_t data_bytes = after_length_field - header_bytes;
  reader.data_section_ = reader.mapping_ + kLengthFieldBytes + header_bytes;
  for (const auto& [key, value] : root.items()) {
    if (key == kMetadataKey) {
      reader.metadata_ = parse_metadata(path, value);
    } else {
      reader.tensors_.push_back(parse_entry(path, key, value, data_bytes));
    }
  }

  std::sort(reader.tensors_.begin(), reader.tensors_.end(),
            [](const SafeTensorInfo& a, const SafeTensorInfo& b) {
              return std::tie(a.data_begin, a.data_end, a.name) <
                     std::tie(b.data_begin, b.data_end, b.name);
            });
  uint64_t covered = 0;  // the tensors seen so far tile [0, covered)
  const SafeTensorInfo* previous = nullptr;  // set whenever covered > 0, so before any overlap
  for (const SafeTensorInfo& t : reader.tensors_) {
    ENGINE_CHECK(t.data_begin >= covered, path, ": tensor '", t.name, "': data_offsets ",
                 range_str(t.data_begin, t.data_end), " overlap tensor '", previous->name, "' ",
                 range_str(previous->data_begin, previous->data_end));
    ENGINE_CHECK(t.data_begin == covered, path, ": bytes [", covered, ", ", t.data_begin,
                 ") of the data section belong to no tensor (a gap before tensor '", t.name, "')");
    covered = t.data_end;
    previous = &t;
  }
  ENGINE_CHECK(covered == data_bytes, path, ": the data section has ", data_bytes,
               " bytes but the tensors cover only ", covered, " (trailing bytes)");

  for (size_t i = 0; i < reader.tensors_.size(); ++i)
    reader.index_.emplace(reader.tensors_[i].name, i);
  return reader;
}

SafeTensorsReader::SafeTensorsReader(SafeTensorsReader&& other) noexcept {
  *this = std::move(other);
}

SafeTensorsReader& SafeTensorsReader::operator=(SafeTensorsReader&& other) noexcept {
  if (this == &other) return *this;
  unmap();
  path_ = std::move(other.path_);
  mapping_ = std::exchange(other.mapping_, nullptr);
  mapping_bytes_ = std::exchange(other.mapping_bytes_, 0);
  data_section_ = std::exchange(other.data_section_, nullptr);
  tensors_ = std::move(other.tensors_);
  index_ = std::move(other.index_);
  metadata_ = std::move(other.metadata_);
  return *this;
}

SafeTensorsReader::~SafeTensorsReader() { unmap(); }

void SafeTensorsReader::unmap() noexcept {
  if (mapping_ != nullptr) ::munmap(const_cast<uint8_t*>(mapping_), mapping_bytes_);
  mapping_ = nullptr;
  mapping_bytes_ = 0;
  data_section_ = nullptr;
}

std::vector<std::string> SafeTensorsReader::keys() const {
  std::vector<std::string> names;
  names.reserve(tensors_.size());
  for (const SafeTensorInfo& t : tensors_) names.push_back(t.name);
  return names;
}

const SafeTensorInfo& SafeTensorsReader::info(const std::string& name) const {
  auto it = index_.find(name);
  ENGINE_CHECK(it != index_.end(), path_, ": no tensor '", name, "' (the file holds ",
               tensors_.size(), " tensors)");
  return tensors_[it->second];
}

Tensor SafeTensorsReader::read(const std::string& name, DType target) const {
  const SafeTensorInfo& t = info(name);
  ENGINE_CHECK(target == DType::F32 || target == DType::F64, path_, ": tensor '", name,
               "': read converts to f32 or f64, not ", dtype_name(target));
  const FileDType type = find_file_dtype(t.dtype)->type;  // validated by open()
  Tensor out = Tensor::empty(t.shape, target);
  const uint8_t* src = data_section_ + t.data_begin;
  const size_t count = static_cast<size_t>(out.numel());
  bool converted = target == DType::F32 ? convert_to(type, src, count, out.data<float>())
                                        : convert_to(type, src, count, out.data<double>());
  ENGINE_CHECK(converted, path_, ": tensor '", name, "': cannot convert dtype ", t.dtype,
               " (readable: F64, F32, F16, BF16, I64, I32, I16, I8, U64, U32, U16, U8, BOOL)");
  return out;
}

// ---- writing ----

void write_safetensors(const std::string& path,
                       const std::vector<std::pair<std::string, Tensor>>& tensors,
                       const std::map<std::string, std::string>& metadata) {
  // Validate everything before touching the file system.
  std::vector<const std::pair<std::string, Tensor>*> order;
  std::set<std::string> names;
  for (const auto& item : tensors) {
    const std::string& name = item.first;
    ENGINE_CHECK(name != kMetadataKey, path, ": '", kMetadataKey,
                 "' is reserved, not a tensor name");
    ENGINE_CHECK(names.insert(name).second, path, ": tensor '", name, "' given twice");
    ENGINE_CHECK(item.second.defined(), path, ": tensor '", name, "' is undefined");
    DType dtype = item.second.dtype();
    ENGINE_CHECK(dtype == DType::F32 || dtype == DType::F64, path, ": tensor '", name, "' is ",
                 dtype_name(dtype), "; only f32 and f64 tensors are written");
    order.push_back(&item);
  }
  // The reference's order: larger elements first (keeps every tensor aligned), then by name.
  std::sort(order.begin(), order.end(), [](const auto* a, const auto* b) {
    size_t size_a = dtype_size(a->second.dtype()), size_b = dtype_size(b->second.dtype());
    return size_a != size_b ? size_a > size_b : a->first < b->first;
  });

  // ordered_json keeps insertion order, and its compact dump matches serde_json's.
  nlohmann::ordered_json header = nlohmann::ordered_json::object();
  if (!metadata.empty()) header[kMetadataKey] = metadata;
  uint64_t offset = 0;
  for (const auto* item : order) {
    const Tensor& tensor = item->second;
    uint64_t end = offset + tensor.nbytes();
    header[item->first] = {{"dtype", tensor.dtype() == DType::F32 ? "F32" : "F64"},
                           {"shape", tensor.shape()},
                           {"data_offsets", {offset, end}}};
    offset = end;
  }
  std::string header_text;
  try {
    header_text = header.dump();
  } catch (const nlohmann::ordered_json::exception& e) {
    detail::fail(path, ": a tensor name or metadata string is not valid UTF-8 (", e.what(), ")");
  }
  header_text.append((8 - header_text.size() % 8) % 8, ' ');  // the data starts 8-aligned
  const uint64_t header_bytes = header_text.size();

  static std::atomic<int> writes{0};
  AtomicFileWriter file(path, ++writes);
  file.write(&header_bytes, sizeof header_bytes);
  file.write(header_text.data(), header_text.size());
  for (size_t i = 0; i < order.size(); ++i) {
    if (i == order.size() / 2) file.kill_point("half");
    Tensor host = order[i]->second.to(Device::CPU);
    file.write(host.raw_data(), host.nbytes());
  }
  file.commit();
}

void write_file_atomically(const std::string& path, const std::string& bytes) {
  AtomicFileWriter file(path);
  file.write(bytes.data(), bytes.size());
  file.commit();
}

}  // namespace engine
