// labels: cpu
// Safetensors I/O: round trips, byte-exact agreement with the reference writer, every dtype
// conversion, one malformed file per check (each asserting its message), atomic writing.
// Run: ctest --test-dir build -R SafeTensors --output-on-failure
#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <string>
#include <vector>

#include "engine/ops.h"
#include "engine/safetensors.h"

using namespace engine;
namespace fs = std::filesystem;

namespace {

std::string le64(uint64_t value) {
  std::string bytes(8, '\0');
  for (int i = 0; i < 8; ++i) bytes[i] = static_cast<char>((value >> (8 * i)) & 0xff);
  return bytes;
}

// A safetensors file: length field, header (padded with spaces to 8 bytes when asked), data.
std::string file_bytes(const std::string& header, const std::string& data = "",
                       bool pad_header = false) {
  std::string padded = header;
  if (pad_header) padded.append((8 - padded.size() % 8) % 8, ' ');
  return le64(padded.size()) + padded + data;
}

// Little-endian bytes of a list of numbers of type T.
template <typename T>
std::string raw_bytes(const std::vector<T>& values) {
  std::string bytes(values.size() * sizeof(T), '\0');
  std::memcpy(bytes.data(), values.data(), bytes.size());
  return bytes;
}

std::string read_whole_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

bool bits_equal(double a, double b) { return std::memcmp(&a, &b, sizeof a) == 0; }

// 16-bit patterns and the exact values they stand for.
struct BitsAndValue {
  uint16_t bits;
  double value;
};

class SafeTensors : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string pattern = (fs::temp_directory_path() / "safetensors-test-XXXXXX").string();
    ASSERT_NE(::mkdtemp(pattern.data()), nullptr) << std::strerror(errno);
    dir_ = pattern;
  }
  void TearDown() override {
    fs::permissions(dir_, fs::perms::owner_all, fs::perm_options::add);
    fs::remove_all(dir_);
  }

  std::string path(const std::string& name) const { return (fs::path(dir_) / name).string(); }

  std::string write_file(const std::string& name, const std::string& bytes) const {
    std::string file = path(name);
    std::ofstream(file, std::ios::binary)
        .write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
    return file;
  }

  // Every file name in the test folder.
  std::vector<std::string> folder_listing() const {
    std::vector<std::string> names;
    for (const auto& entry : fs::directory_iterator(dir_)) names.push_back(entry.path().filename());
    std::sort(names.begin(), names.end());
    return names;
  }

  // Opening `bytes` must fail with a message naming the file and containing `expected`.
  void expect_open_error(const std::string& bytes, const std::string& expected) const {
    std::string file = write_file("bad.safetensors", bytes);
    try {
      SafeTensorsReader::open(file);
      ADD_FAILURE() << "expected an error containing: " << expected;
    } catch (const Error& e) {
      std::string message = e.what();
      EXPECT_NE(message.find(file + ": "), std::string::npos) << message;
      EXPECT_NE(message.find(expected), std::string::npos)
          << "message: " << message << "\nexpected to contain: " << expected;
    }
  }

  // Stores `cases` as a one-dimensional tensor of `dtype`, reads it as f32 and as f64, and
  // checks every value bit for bit (a NaN: any NaN of the same sign).
  void expect_exact_conversion(const std::string& dtype,
                               const std::vector<BitsAndValue>& cases) const {
    std::vector<uint16_t> stored;
    for (const BitsAndValue& c : cases) stored.push_back(c.bits);
    const std::string n = std::to_string(cases.size()), bytes = std::to_string(2 * cases.size());
    std::string header = R"({"t":{"dtype":")" + dtype + R"(","shape":[)" + n +
                         R"(],"data_offsets":[0,)" + bytes + "]}}";
    SafeTensorsReader reader =
        SafeTensorsReader::open(write_file(dtype, file_bytes(header, raw_bytes(stored))));
    for (DType target : {DType::F32, DType::F64}) {
      std::vector<double> got = reader.read("t", target).to_vector();
      for (size_t i = 0; i < cases.size(); ++i) {
        char pattern[8];
        std::snprintf(pattern, sizeof pattern, "0x%04x", cases[i].bits);
        SCOPED_TRACE(dtype + " " + pattern + " read as " + dtype_name(target));
        if (std::isnan(cases[i].value)) {
          EXPECT_TRUE(std::isnan(got[i])) << got[i];
          EXPECT_EQ(std::signbit(got[i]), std::signbit(cases[i].value));
        } else {
          EXPECT_TRUE(bits_equal(got[i], cases[i].value)) << got[i] << " vs " << cases[i].value;
        }
      }
    }
  }

  std::string dir_;
};

TEST_F(SafeTensors, RoundTripF32AndF64WithMetadata) {
  Tensor weight = Tensor::randn({2, 3, 5}, 7);
  Tensor bias = Tensor::randn({3}, 8, 0, DType::F64);
  Tensor step = Tensor::from_vector({42}, {});
  Tensor none = Tensor::zeros({0, 4});
  std::map<std::string, std::string> metadata = {{"format", "pt"}, {"epoch", "3"}};
  std::string file = path("model.safetensors");
  write_safetensors(file, {{"weight", weight}, {"bias", bias}, {"step", step}, {"none", none}},
                    metadata);

  SafeTensorsReader reader = SafeTensorsReader::open(file);
  // The reference's order: f64 first, then f32 by name.
  EXPECT_EQ(reader.keys(), (std::vector<std::string>{"bias", "none", "step", "weight"}));
  EXPECT_EQ(reader.metadata(), metadata);
  EXPECT_TRUE(reader.has("weight"));
  EXPECT_FALSE(reader.has("weights"));
  EXPECT_EQ(reader.info("weight").dtype, "F32");
  EXPECT_EQ(reader.info("weight").shape, (Shape{2, 3, 5}));
  EXPECT_EQ(reader.info("bias").dtype, "F64");
  EXPECT_EQ(reader.info("step").shape, Shape{});
  EXPECT_EQ(reader.info("none").data_begin, reader.info("none").data_end);

  Tensor weight_back = reader.read("weight");
  EXPECT_EQ(weight_back.dtype(), DType::F32);
  EXPECT_EQ(weight_back.shape(), weight.shape());
  EXPECT_EQ(weight_back.to_vector(), weight.to_vector());
  Tensor bias_back = reader.read("bias", DType::F64);
  EXPECT_EQ(bias_back.to_vector(), bias.to_vector());
  EXPECT_EQ(reader.read("weight", DType::F64).to_vector(), weight.to_vector());
  EXPECT_EQ(reader.read("bias", DType::F32).to_vector(), bias.to(DType::F32).to_vector());
  EXPECT_EQ(reader.read("step").item(), 42.0);
  EXPECT_EQ(reader.read("none").shape(), (Shape{0, 4}));

  // Moving the reader keeps the mapping valid.
  SafeTensorsReader moved = std::move(reader);
  EXPECT_EQ(moved.read("weight").to_vector(), weight.to_vector());
}

// The reference implementation's own test vectors (safetensors tensor.rs: test_serialization,
// test_empty, test_serialization_forced_alignement): we read them and write them byte for byte.
TEST_F(SafeTensors, MatchesReferenceBytes) {
  const std::string floats = raw_bytes<float>({0, 1, 2, 3, 4, 5});
  const std::string attn =
      file_bytes(R"({"attn.0":{"dtype":"F32","shape":[1,2,3],"data_offsets":[0,24]}})", floats);
  ASSERT_EQ(attn.substr(0, 8), le64(64));
  const std::string attn_aligned = file_bytes(
      R"({"attn0":{"dtype":"F32","shape":[1,1,2,3],"data_offsets":[0,24]}})" + std::string(7, ' '),
      floats);
  const std::string empty = file_bytes("{}      ");
  const std::string only_metadata =
      file_bytes(R"({"__metadata__":{"framework":"pt"}})" + std::string(5, ' '));

  Tensor values = Tensor::from_vector({0, 1, 2, 3, 4, 5}, {1, 2, 3});
  write_safetensors(path("a"), {{"attn.0", values}});
  EXPECT_EQ(read_whole_file(path("a")), attn);
  write_safetensors(path("b"), {{"attn0", reshape(values, {1, 1, 2, 3})}});
  EXPECT_EQ(read_whole_file(path("b")), attn_aligned);
  write_safetensors(path("c"), {});
  EXPECT_EQ(read_whole_file(path("c")), empty);
  write_safetensors(path("d"), {}, {{"framework", "pt"}});
  EXPECT_EQ(read_whole_file(path("d")), only_metadata);

  SafeTensorsReader reader = SafeTensorsReader::open(write_file("attn", attn));
  EXPECT_EQ(reader.keys(), std::vector<std::string>{"attn.0"});
  EXPECT_EQ(reader.read("attn.0").to_vector(), values.to_vector());
  EXPECT_EQ(reader.read("attn.0").shape(), (Shape{1, 2, 3}));
  EXPECT_TRUE(SafeTensorsReader::open(write_file("empty", empty)).keys().empty());
  EXPECT_EQ(SafeTensorsReader::open(write_file("meta", only_metadata)).metadata().at("framework"),
            "pt");
}

// What safetensors.torch.save_file({"a": f16 [1, -2], "b": f64 [0.5], "c": i64 [[7, -1]]},
// metadata={"format": "pt"}) writes: tensors by descending dtype (I64, F64, F16), then name;
// header padded to 200 bytes; data bytes spelled out by hand.
TEST_F(SafeTensors, ReadsMixedDtypeFileAsPythonWritesIt) {
  const std::string header = R"({"__metadata__":{"format":"pt"},)"
                             R"("c":{"dtype":"I64","shape":[1,2],"data_offsets":[0,16]},)"
                             R"("b":{"dtype":"F64","shape":[1],"data_offsets":[16,24]},)"
                             R"("a":{"dtype":"F16","shape":[2],"data_offsets":[24,28]}})"
                             "  ";
  ASSERT_EQ(header.size(), 200u);
  const std::string data = std::string("\x07\0\0\0\0\0\0\0", 8) + std::string(8, '\xff') +  // 7, -1
                           std::string("\0\0\0\0\0\0\xe0\x3f", 8) +                         // 0.5
                           std::string("\x00\x3c\x00\xc0", 4);                              // 1, -2
  const std::string bytes = std::string("\xc8\0\0\0\0\0\0\0", 8) + header + data;

  SafeTensorsReader reader = SafeTensorsReader::open(write_file("mixed.safetensors", bytes));
  EXPECT_EQ(reader.keys(), (std::vector<std::string>{"c", "b", "a"}));
  EXPECT_EQ(reader.metadata(), (std::map<std::string, std::string>{{"format", "pt"}}));
  EXPECT_EQ(reader.info("c").dtype, "I64");
  EXPECT_EQ(reader.info("c").shape, (Shape{1, 2}));
  EXPECT_EQ(reader.read("c").to_vector(), (std::vector<double>{7, -1}));
  EXPECT_EQ(reader.read("b", DType::F64).to_vector(), (std::vector<double>{0.5}));
  EXPECT_EQ(reader.read("a").to_vector(), (std::vector<double>{1, -2}));
}

TEST_F(SafeTensors, HalfConvertsExactly) {
  const double inf = std::numeric_limits<double>::infinity(), nan = std::nan("");
  expect_exact_conversion("F16", {{0x0000, 0.0},
                                  {0x8000, -0.0},
                                  {0x3c00, 1.0},
                                  {0xc000, -2.0},
                                  {0x3555, 0.333251953125},  // 1365 / 4096, the half nearest 1/3
                                  {0x7bff, 65504.0},         // largest finite
                                  {0x0001, std::ldexp(1, -24)},         // smallest subnormal
                                  {0x03ff, 1023 * std::ldexp(1, -24)},  // largest subnormal
                                  {0x0400, std::ldexp(1, -14)},         // smallest normal
                                  {0x7c00, inf},
                                  {0xfc00, -inf},
                                  {0x7e00, nan},
                                  {0xfe01, -nan}});
}

TEST_F(SafeTensors, BFloat16ConvertsExactly) {
  const double inf = std::numeric_limits<double>::infinity(), nan = std::nan("");
  expect_exact_conversion("BF16", {{0x0000, 0.0},
                                   {0x8000, -0.0},
                                   {0x3f80, 1.0},
                                   {0xc000, -2.0},
                                   {0x4049, 3.140625},
                                   {0x7f7f, 255 * std::ldexp(1, 120)},  // largest finite
                                   {0x0001, std::ldexp(1, -133)},       // smallest subnormal
                                   {0x0080, std::ldexp(1, -126)},       // smallest normal
                                   {0x7f80, inf},
                                   {0xff80, -inf},
                                   {0x7fc0, nan},
                                   {0xffc1, -nan}});
}

TEST_F(SafeTensors, IntegerAndOtherFloatDtypesConvert) {
  const int64_t big = int64_t{1} << 62;
  std::string data =
      raw_bytes<int64_t>({-3, 0, big, std::numeric_limits<int64_t>::min()}) +  // 0..32
      raw_bytes<int32_t>({-7, std::numeric_limits<int32_t>::max()}) +          // 32..40
      raw_bytes<uint64_t>({std::numeric_limits<uint64_t>::max()}) +            // 40..48
      raw_bytes<double>({0.1}) +                                               // 48..56
      raw_bytes<uint32_t>({4000000000u}) +                                     // 56..60
      raw_bytes<int16_t>({-300}) + raw_bytes<uint16_t>({65535}) +              // 60..64
      raw_bytes<int8_t>({-128}) + raw_bytes<uint8_t>({255}) +                  // 64..66
      raw_bytes<uint8_t>({0, 1});                                              // 66..68
  std::string header = R"({"i64":{"dtype":"I64","shape":[4],"data_offsets":[0,32]},)"
                       R"("i32":{"dtype":"I32","shape":[2],"data_offsets":[32,40]},)"
                       R"("u64":{"dtype":"U64","shape":[],"data_offsets":[40,48]},)"
                       R"("f64":{"dtype":"F64","shape":[1],"data_offsets":[48,56]},)"
                       R"("u32":{"dtype":"U32","shape":[1],"data_offsets":[56,60]},)"
                       R"("i16":{"dtype":"I16","shape":[1],"data_offsets":[60,62]},)"
                       R"("u16":{"dtype":"U16","shape":[1],"data_offsets":[62,64]},)"
                       R"("i8":{"dtype":"I8","shape":[1],"data_offsets":[64,65]},)"
                       R"("u8":{"dtype":"U8","shape":[1],"data_offsets":[65,66]},)"
                       R"("bool":{"dtype":"BOOL","shape":[2],"data_offsets":[66,68]}})";
  // A header of odd length: the data is unaligned, which the reader must tolerate.
  ASSERT_NE(header.size() % 8, 0u);
  SafeTensorsReader reader = SafeTensorsReader::open(write_file("ints", file_bytes(header, data)));
  EXPECT_EQ(reader.read("i64", DType::F64).to_vector(),
            (std::vector<double>{-3, 0, std::ldexp(1, 62), -std::ldexp(1, 63)}));
  EXPECT_EQ(reader.read("i32", DType::F64).to_vector(), (std::vector<double>{-7, 2147483647.0}));
  EXPECT_EQ(reader.read("i32").to_vector(), (std::vector<double>{-7, 2147483648.0}));  // rounded
  EXPECT_EQ(reader.read("u64", DType::F64).item(), std::ldexp(1, 64));
  EXPECT_EQ(reader.read("f64").item(), static_cast<double>(0.1f));
  EXPECT_EQ(reader.read("u32", DType::F64).item(), 4000000000.0);
  EXPECT_EQ(reader.read("i16").item(), -300);
  EXPECT_EQ(reader.read("u16").item(), 65535);
  EXPECT_EQ(reader.read("i8").item(), -128);
  EXPECT_EQ(reader.read("u8").item(), 255);
  EXPECT_EQ(reader.read("bool").to_vector(), (std::vector<double>{0, 1}));
}

TEST_F(SafeTensors, UnconvertibleReadsFailWithTheKey) {
  std::string header = R"({"q":{"dtype":"F8_E4M3","shape":[2],"data_offsets":[0,2]}})";
  SafeTensorsReader reader =
      SafeTensorsReader::open(write_file("f8.safetensors", file_bytes(header, "ab")));
  EXPECT_EQ(reader.info("q").dtype, "F8_E4M3");
  try {
    reader.read("q");
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(
        std::string(e.what()).find("f8.safetensors: tensor 'q': cannot convert dtype F8_E4M3"),
        std::string::npos)
        << e.what();
  }
  try {
    reader.read("q", DType::BF16);
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("read converts to f32 or f64, not bf16"),
              std::string::npos)
        << e.what();
  }
  for (const char* missing : {"nope", ""}) {
    try {
      reader.read(missing);
      FAIL() << "expected an error";
    } catch (const Error& e) {
      EXPECT_NE(
          std::string(e.what()).find("f8.safetensors: no tensor '" + std::string(missing) + "'"),
          std::string::npos)
          << e.what();
    }
  }
  EXPECT_THROW(reader.info("nope"), Error);
}

// One defect per file; each must be rejected with a message naming it.
TEST_F(SafeTensors, RejectsMalformedFiles) {
  const std::string four = std::string(4, '\0');
  auto one_tensor = [&](const std::string& entry, const std::string& data) {
    return file_bytes(R"({"w":)" + entry + "}", data);
  };
  expect_open_error("", "empty file");
  expect_open_error(std::string(7, '\0'), "file has 7 bytes, fewer than the 8-byte header length");
  expect_open_error(le64(100) + "{}",
                    "header length 100 exceeds the 2 bytes after the length field");
  expect_open_error(le64(uint64_t{1} << 63) + "{}",
                    "header length 9223372036854775808 exceeds the 2 bytes");
  expect_open_error(file_bytes(R"({"w":)"), "header is not valid JSON");
  expect_open_error(file_bytes("{\"w\xff\":1}"), "header is not valid JSON");  // bad UTF-8
  expect_open_error(file_bytes(""), "header is not valid JSON");
  expect_open_error(file_bytes("[1, 2]"), "header must be a JSON object, got array");
  expect_open_error(file_bytes("\"text\""), "header must be a JSON object, got string");
  expect_open_error(one_tensor("3", ""), "tensor 'w': entry must be an object");
  expect_open_error(one_tensor(R"({"shape":[1],"data_offsets":[0,4]})", four),
                    "tensor 'w': missing \"dtype\"");
  expect_open_error(one_tensor(R"({"dtype":"F32","data_offsets":[0,4]})", four),
                    "tensor 'w': missing \"shape\"");
  expect_open_error(one_tensor(R"({"dtype":"F32","shape":[1]})", four),
                    "tensor 'w': missing \"data_offsets\"");
  expect_open_error(one_tensor(R"({"dtype":"F12","shape":[1],"data_offsets":[0,4]})", four),
                    "tensor 'w': unknown dtype \"F12\" (known: BOOL, U8");
  expect_open_error(one_tensor(R"({"dtype":32,"shape":[1],"data_offsets":[0,4]})", four),
                    "tensor 'w': \"dtype\" must be a string");
  expect_open_error(one_tensor(R"({"dtype":"F32","shape":[-1],"data_offsets":[0,4]})", four),
                    "tensor 'w': \"shape\" must hold non-negative integers, got [-1]");
  expect_open_error(one_tensor(R"({"dtype":"F32","shape":[1.0],"data_offsets":[0,4]})", four),
                    "tensor 'w': \"shape\" must hold non-negative integers, got [1.0]");
  expect_open_error(one_tensor(R"({"dtype":"F32","shape":"1","data_offsets":[0,4]})", four),
                    "tensor 'w': \"shape\" must be an array");
  expect_open_error(
      one_tensor(R"({"dtype":"F32","shape":[4294967296,4294967296],"data_offsets":[0,4]})", four),
      "tensor 'w': shape [4294967296,4294967296] has more elements than fit in 63 bits");
  // The element count fits but its size in bytes does not.
  expect_open_error(
      one_tensor(R"({"dtype":"F64","shape":[4611686018427387904],"data_offsets":[0,4]})", four),
      "tensor 'w': shape [4611686018427387904] of F64 has more bytes than fit in 64 bits");
  // One dimension alone beyond int64, hidden behind a zero.
  expect_open_error(
      one_tensor(R"({"dtype":"F32","shape":[0,18446744073709551615],"data_offsets":[0,0]})", ""),
      "has more elements than fit in 63 bits");
  expect_open_error(one_tensor(R"({"dtype":"F32","shape":[1],"data_offsets":[4,0]})", four),
                    "tensor 'w': data_offsets [4, 0] are reversed (begin > end)");
  expect_open_error(one_tensor(R"({"dtype":"F32","shape":[2],"data_offsets":[0,8]})", four),
                    "tensor 'w': data_offsets [0, 8] exceed the data section (4 bytes)");
  expect_open_error(one_tensor(R"({"dtype":"F32","shape":[1],"data_offsets":[0]})", four),
                    "tensor 'w': \"data_offsets\" must be two non-negative integers, got [0]");
  expect_open_error(one_tensor(R"({"dtype":"F32","shape":[1],"data_offsets":[0,-4]})", four),
                    "\"data_offsets\" must be two non-negative integers");
  expect_open_error(one_tensor(R"({"dtype":"F32","shape":[2],"data_offsets":[0,4]})", four),
                    "tensor 'w': data_offsets [0, 4] span 4 bytes but F32 [2] needs 8");
  expect_open_error(file_bytes(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
                               R"("b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})",
                               std::string(12, '\0')),
                    "tensor 'b': data_offsets [4, 12] overlap tensor 'a' [0, 8]");
  expect_open_error(
      file_bytes(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},)"
                 R"("b":{"dtype":"F32","shape":[1],"data_offsets":[8,12]}})",
                 std::string(12, '\0')),
      "bytes [4, 8) of the data section belong to no tensor (a gap before tensor 'b')");
  expect_open_error(one_tensor(R"({"dtype":"F32","shape":[1],"data_offsets":[0,4]})", four + four),
                    "the data section has 8 bytes but the tensors cover only 4");
  expect_open_error(file_bytes(R"({"w":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},)"
                               R"("w":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})",
                               four + four),
                    "header names 'w' twice");
  expect_open_error(file_bytes(std::string(100000, '[')),
                    "header JSON nests deeper than 16 levels");
  expect_open_error(file_bytes(R"({"__metadata__":{"epoch":3}})"),
                    "\"__metadata__\" value of 'epoch' must be a string, got 3");
  expect_open_error(file_bytes(R"({"__metadata__":["pt"]})"),
                    "\"__metadata__\" must be an object of strings");
}

TEST_F(SafeTensors, BracketsInsideStringsAreNotNesting) {
  std::string name(40, '[');
  std::string header = "{\"" + name +
                       "\":{\"dtype\":\"F32\",\"shape\":[],\"data_offsets\":[0,4]}," +
                       R"("__metadata__":{"note":"]]]]{{{{\"[[[["}})";
  SafeTensorsReader reader =
      SafeTensorsReader::open(write_file("x", file_bytes(header, raw_bytes<float>({2.5f}))));
  EXPECT_EQ(reader.read(name).item(), 2.5);
  EXPECT_EQ(reader.metadata().at("note"), "]]]]{{{{\"[[[[");
}

TEST_F(SafeTensors, RejectsHeaderOverTheLimit) {
  // A sparse file just large enough to hold a header beyond 100 MiB.
  const uint64_t header_bytes = (uint64_t{100} << 20) + 1;
  std::string file = write_file("huge.safetensors", le64(header_bytes));
  fs::resize_file(file, header_bytes + 8);
  try {
    SafeTensorsReader::open(file);
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("huge.safetensors: header length 104857601 exceeds the "
                                         "limit of 104857600 bytes"),
              std::string::npos)
        << e.what();
  }
}

TEST_F(SafeTensors, RejectsTruncatedCopies) {
  std::string file = path("good.safetensors");
  write_safetensors(file, {{"a", Tensor::randn({64}, 1)}, {"b", Tensor::randn({8}, 2)}});
  const std::string good = read_whole_file(file);
  expect_open_error(good.substr(0, good.size() - 3), "exceed the data section");
  expect_open_error(good.substr(0, 20), "exceeds the 12 bytes after the length field");
}

TEST_F(SafeTensors, OpenReportsMissingFilesAndFolders) {
  for (const std::string& target : {path("missing.safetensors"), dir_}) {
    try {
      SafeTensorsReader::open(target);
      FAIL() << "expected an error for " << target;
    } catch (const Error& e) {
      EXPECT_EQ(std::string(e.what()).rfind(target + ": ", 0), 0u) << e.what();
    }
  }
}

TEST_F(SafeTensors, WriteRejectsBadInputsBeforeTouchingTheDisk) {
  std::string file = path("out.safetensors");
  Tensor t = Tensor::zeros({2});
  EXPECT_THROW(write_safetensors(file, {{"a", t}, {"a", t}}), Error);
  EXPECT_THROW(write_safetensors(file, {{"__metadata__", t}}), Error);
  EXPECT_THROW(write_safetensors(file, {{"u", Tensor()}}), Error);
  EXPECT_THROW(write_safetensors(file, {{"bad\xff", t}}), Error);  // not UTF-8
  EXPECT_TRUE(folder_listing().empty());
}

TEST_F(SafeTensors, OverwriteReplacesTheFileAndLeavesNoTemporary) {
  std::string file = path("ckpt.safetensors");
  write_safetensors(file, {{"w", Tensor::full({3}, 1.0)}});
  write_safetensors(file, {{"w", Tensor::full({5}, 2.0)}});
  EXPECT_EQ(SafeTensorsReader::open(file).read("w").to_vector(), (std::vector<double>(5, 2.0)));
  EXPECT_EQ(folder_listing(), std::vector<std::string>{"ckpt.safetensors"});
}

TEST_F(SafeTensors, WriteIntoMissingFolderFailsCleanly) {
  std::string file = path("no/such/folder/model.safetensors");
  try {
    write_safetensors(file, {{"w", Tensor::zeros({2})}});
    FAIL() << "expected an error";
  } catch (const Error& e) {
    std::string message = e.what();
    EXPECT_EQ(message.rfind(file + ": cannot create the temporary file", 0), 0u) << message;
    EXPECT_NE(message.find(std::strerror(ENOENT)), std::string::npos) << message;
  }
  EXPECT_TRUE(folder_listing().empty());
}

TEST_F(SafeTensors, WriteIntoReadOnlyFolderKeepsTheOldFile) {
  std::string file = path("model.safetensors");
  write_safetensors(file, {{"w", Tensor::full({2}, 1.0)}});
  const std::string old_bytes = read_whole_file(file);
  fs::permissions(dir_, fs::perms::owner_read | fs::perms::owner_exec);
  // Root (and CAP_DAC_OVERRIDE) writes through permission bits: nothing to test then.
  std::string probe = path("probe");
  int fd = ::open(probe.c_str(), O_WRONLY | O_CREAT, 0644);
  if (fd >= 0) {
    ::close(fd);
    ::unlink(probe.c_str());
    GTEST_SKIP() << "this process can write into a read-only folder (running as root?)";
  }
  try {
    write_safetensors(file, {{"w", Tensor::full({2}, 2.0)}});
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(std::strerror(EACCES)), std::string::npos) << e.what();
  }
  fs::permissions(dir_, fs::perms::owner_all);
  EXPECT_EQ(read_whole_file(file), old_bytes);
  EXPECT_EQ(folder_listing(), std::vector<std::string>{"model.safetensors"});
}

// A write that fails half way (here: the file-size limit, standing in for a full disk) must
// leave the old file intact and remove the temporary file.
TEST_F(SafeTensors, FailedWriteKeepsTheOldFileAndRemovesTheTemporary) {
  std::string file = path("model.safetensors");
  write_safetensors(file, {{"w", Tensor::full({2}, 1.0)}});
  const std::string old_bytes = read_whole_file(file);

  struct rlimit saved_limit;
  ASSERT_EQ(::getrlimit(RLIMIT_FSIZE, &saved_limit), 0);
  struct rlimit small_limit = saved_limit;
  small_limit.rlim_cur = 4096;
  sighandler_t saved_handler = ::signal(SIGXFSZ, SIG_IGN);  // write() then fails with EFBIG
  ASSERT_EQ(::setrlimit(RLIMIT_FSIZE, &small_limit), 0);
  std::string message;
  try {
    write_safetensors(file, {{"w", Tensor::zeros({100000})}});
  } catch (const Error& e) {
    message = e.what();
  }
  ::setrlimit(RLIMIT_FSIZE, &saved_limit);
  ::signal(SIGXFSZ, saved_handler);

  EXPECT_EQ(message.rfind(file + ": writing '" + file + ".tmp-", 0), 0u) << message;
  EXPECT_NE(message.find(std::strerror(EFBIG)), std::string::npos) << message;
  EXPECT_NE(message.find("is unchanged"), std::string::npos) << message;
  EXPECT_EQ(read_whole_file(file), old_bytes);
  EXPECT_EQ(folder_listing(), std::vector<std::string>{"model.safetensors"});
}

TEST_F(SafeTensors, WritesTensorsFromTheGpu) {
  Tensor gpu;
  try {
    gpu = Tensor::randn({4, 3}, 5, 0, DType::F32, Device::CUDA);
  } catch (const std::exception& e) {
    GTEST_SKIP() << "no CUDA device: " << e.what();
  }
  std::string file = path("gpu.safetensors");
  write_safetensors(file, {{"g", gpu}});
  EXPECT_EQ(SafeTensorsReader::open(file).read("g").to_vector(), gpu.to_vector());
}

}  // namespace
